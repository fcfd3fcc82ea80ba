"""The Training tab's "Data" button: the corpus of new runs, this Python's standard library
sources by default, or a file the user picks: text, or a .jsonl of fine-tuning examples
(chats, prompt/completion pairs or texts: core.training.chat_data)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QPushButton, QWidget

from core.training.launcher import STDLIB

DATA_FILTER = ("Training data (*.jsonl *.txt *.md *.py *.json);;Fine-tuning examples (*.jsonl);;"
               "All files (*)")
MOST_CHARACTERS = 24


class DataPicker:
    """Owns the button: says which data new runs train on; a click picks another file."""

    def __init__(self, button: QPushButton, parent: QWidget) -> None:
        self.button, self._parent = button, parent
        self.data = STDLIB
        button.clicked.connect(lambda: self.pick())
        self.set_data(STDLIB)

    def pick(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self._parent, "Training data: a text file, or a .jsonl of "
                                              "fine-tuning examples", "", DATA_FILTER)
        if path:
            self.set_data(path)

    def set_data(self, data: str) -> None:
        self.data = data
        name = "Python stdlib" if data == STDLIB else _short(Path(data).name)
        self.button.setText(f"Data: {name}")
        self.button.setToolTip("The data new runs train on; click to pick a text file or a .jsonl of "
                               "chats, prompt/completion pairs or texts (the loss on the answers only)\n"
                               f"now: {data}")


def _short(name: str, most: int = MOST_CHARACTERS) -> str:
    """A long file name shortened in its middle (the button stays narrow; the tooltip has it all)."""
    return name if len(name) <= most else name[:most // 2 - 1] + "…" + name[-(most // 2):]

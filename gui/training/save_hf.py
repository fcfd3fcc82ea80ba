"""The Training tab's "Save as HF…": a finished or stopped HF run's latest
checkpoint as a Hugging Face model folder (core.training.hf_export), written
by a child process (gui.training.launch)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog, QPushButton, QWidget

from core.errors import InputError
from core.system.child_call import Call
from gui.training.launch import LaunchThread

Say = Callable[[str, bool], bool]


def is_hf_run_with_checkpoint(run_dir: Path | None) -> bool:
    """An HF model's run that has a checkpoint to save (False for anything unreadable)."""
    from core.training.launcher import RunPaths, latest_checkpoint
    from core.training.run_info import read_run_info

    if run_dir is None:
        return False
    try:
        is_hf = read_run_info(run_dir).is_hf
    except InputError:
        return False
    return is_hf and latest_checkpoint(RunPaths(run_dir).checkpoints) is not None


class HFSaver(QObject):
    """Owns the button: enabled for a saveable run, asks for a new folder, saves in a child process."""

    def __init__(self, button: QPushButton, say: Say, parent: QWidget) -> None:
        super().__init__(parent)
        self.button, self._say, self._parent = button, say, parent
        self.run: Path | None = None
        self._thread: LaunchThread | None = None
        button.setToolTip("Save the selected Hugging Face run's last checkpoint as a model folder "
                          "(config.json + safetensors) for from_pretrained")
        button.clicked.connect(lambda: self.save())
        self.set_run(None)

    def set_run(self, run: Path | None) -> None:
        """The run the button would save (None: no run that is not live)."""
        self.run = run if is_hf_run_with_checkpoint(run) else None
        self.button.setEnabled(self.run is not None and self._thread is None)

    def save(self, out: str | None = None) -> bool:
        """Save to `out` (None: ask with a folder dialog). False when nothing started."""
        run = self.run
        if run is None or self._thread is not None:
            return False
        if out is None:
            out = QFileDialog.getExistingDirectory(self._parent, "Save as a Hugging Face model: a new, empty folder")
            if not out:
                return False
        from core.training.launcher import export_run

        thread = LaunchThread(Call(export_run, (run, out)), self)
        thread.succeeded.connect(self._saved)
        thread.failed.connect(self._failed)
        self._thread = thread
        self.button.setEnabled(False)
        self._say(f"Saving {run.name} as a Hugging Face model in {out} …", False)
        thread.start()
        return True

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.wait()

    def _saved(self, folder: Path) -> None:
        self._finish()
        self._say(f"Saved the Hugging Face model to {folder} (AutoModelForCausalLM.from_pretrained loads it).", False)

    def _failed(self, message: str) -> None:
        self._finish()
        self._say(message, True)

    def _finish(self) -> None:
        if self._thread is not None:
            self._thread.wait()
            self._thread.deleteLater()
            self._thread = None
        self.set_run(self.run)

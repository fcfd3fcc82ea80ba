"""The Training tab's Data button: the standard library by default; a picked .jsonl of
fine-tuning examples is what Start trains on."""

from __future__ import annotations

from PySide6.QtWidgets import QFileDialog

from core.training.launcher import STDLIB
from tests.gui.training.test_training_view import training_window


def test_a_picked_jsonl_file_is_the_data_of_new_runs(qtbot, make_window, tmp_path, monkeypatch):
    window, view = training_window(make_window, tmp_path / "runs")
    assert view.data_picker.data == STDLIB and view.data_button.text() == "Data: Python stdlib"
    chats = tmp_path / "chat.jsonl"
    chats.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n')
    asked: list[str] = []

    def choose(parent, title, folder, filters):
        asked.append(filters)
        return str(chats), ""

    monkeypatch.setattr(QFileDialog, "getOpenFileName", choose)
    view.data_button.click()
    assert "*.jsonl" in asked[0]
    assert view.data_picker.data == str(chats) and view.data_button.text() == "Data: chat.jsonl"
    window.resize(1280, 800)
    window.show()
    qtbot.waitExposed(window)
    qtbot.waitUntil(lambda: view.data_button.width() >= view.data_button.sizeHint().width())  # text not cut
    view.grab().save("/tmp/training_data_picker.png")

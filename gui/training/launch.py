"""Starting or resuming a run off the GUI thread, and the processes of a job.

start_run reads and tokenizes the corpus and plans before the job starts:
seconds of work that would freeze the window. A LaunchThread runs one such
call and reports back with queued signals (delivered on the GUI thread).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from core.errors import InputError

# called with `emit` for progress lines; its result (a RunHandle, a saved folder...) is the caller's: Any
Action = Callable[[Callable[[str], None]], Any]


class LaunchThread(QThread):
    """Runs `action(emit)` once: `succeeded(result)` or `failed(one line)`; `progress(line)` meanwhile."""

    succeeded = Signal(object)
    failed = Signal(str)
    progress = Signal(str)

    def __init__(self, action: Action, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._action = action

    def run(self) -> None:
        try:
            result = self._action(self.progress.emit)
        except InputError as error:
            self.failed.emit(str(error))
        except Exception as error:  # a bug or an OS error: still one line, never a dead thread
            self.failed.emit(" ".join(f"{type(error).__name__}: {error}".split()))
        else:
            self.succeeded.emit(result)


def job_pids(pids: Iterable[int]) -> tuple[int, ...]:
    """These processes and their children (torchrun's stage workers): what the monitor watches."""
    import psutil

    found = set(pids)
    for pid in list(found):
        try:
            found.update(child.pid for child in psutil.Process(pid).children(recursive=True))
        except psutil.Error:
            continue  # it ended meanwhile
    return tuple(sorted(found))

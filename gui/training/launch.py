"""Starting or resuming a run, or saving one, in a child process; and the processes of a job.

start_run reads and tokenizes the corpus and plans before the job starts:
seconds of Python work. On a thread of the GUI's process that work held the
GIL the GUI thread needs for every paint (core.system.child_call says what it
cost), so it runs in a spawned child. A LaunchThread starts that child, waits
on its pipe (a wait that holds no GIL) and reports with queued signals,
delivered on the GUI thread.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable
from multiprocessing.connection import Connection

from PySide6.QtCore import QObject, QThread, Signal

from core.system.child_call import Call, one_line, serve_call


class LaunchThread(QThread):
    """Runs `call` in a child: `succeeded(result)` or `failed(one line)`; `progress(line)` meanwhile."""

    succeeded = Signal(object)
    failed = Signal(str)
    progress = Signal(str)

    def __init__(self, call: Call, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._call = call

    def run(self) -> None:
        try:
            kind, payload = self._run_child()
        except Exception as error:  # e.g. an argument that does not pickle: a bug, still one line
            kind, payload = "error", one_line(error)
        (self.succeeded if kind == "done" else self.failed).emit(payload)

    def _run_child(self) -> tuple[str, object]:
        context = multiprocessing.get_context("spawn")  # never a fork of a process running Qt threads
        receiver, sender = context.Pipe(duplex=False)
        # not a daemon: the app's exit waits for a start it asked for rather than cut it short
        child = context.Process(target=serve_call, args=(sender, self._call), name="allot-launch")
        with receiver:
            with sender:  # closed here once started: the child holds the only writing end, so its death ends recv()
                child.start()
            outcome = self._relay(receiver)
        child.join()
        return outcome or ("error", f"the process preparing it ended without a word (exit code {child.exitcode})")

    def _relay(self, receiver: Connection) -> tuple[str, object] | None:
        """Emit the child's progress lines; its outcome, or None when it died first."""
        try:
            while True:
                kind, payload = receiver.recv()
                if kind != "progress":
                    return kind, payload
                self.progress.emit(payload)
        except EOFError:
            return None


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

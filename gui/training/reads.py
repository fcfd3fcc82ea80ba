"""Reads away from the GUI's interpreter: one reader process, its results polled by a GUI timer.

Parsing holds the GIL (a regular-expression pass, numpy glue between them).
On a thread of the GUI process every Python call the GUI makes, each paint of
pyqtgraph included, would wait for it: measured here, a 5 ms tick fired 3
times in the seconds a 200,000-row read took. So reads run in one child
process, spawned like the planning process (gui.plan.jobs, for the same
reason) when the Training view is made, and kept; it ends when the app's end
closes its pipe.

A read is a module-level function `work(*args, emit=..., should_stop=...)`
(core.runs.history_reader): the child (core.runs.read_service, no Qt)
calls it, sends what it emits and returns over the pipe, and between blocks
reads the pipe for cancellations.
A timer on the GUI thread, running only while a read is in flight, hands the
messages to the read's callbacks (only the newest progress of each). Starting
a read under a key cancels the one before it; a cancelled read's messages
are dropped.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QTimer

from core.runs.history_reader import Work, serve

POLL_MS = 30
# What a read's work emits or returns (history rows, curves...): reads are generic, so it is Any.
Payload = Any


@dataclass(eq=False)
class Read:
    key: Hashable
    on_progress: Callable[[Payload], None]
    on_done: Callable[[Payload], None]
    on_error: Callable[[str], object]


class ReaderProcess(QObject):
    """The app's reader process and the reads in flight in it (create on the GUI thread)."""

    def __init__(self, poll_ms: int = POLL_MS) -> None:
        super().__init__()
        context = multiprocessing.get_context("spawn")  # never a fork of a process running Qt threads
        self._conn, child = context.Pipe(duplex=True)
        self.process = context.Process(target=serve, args=(child,), name="allot-reader", daemon=True)
        self.process.start()
        child.close()
        self.pid = self.process.pid
        self._ids = itertools.count(1)
        self._reads: dict[int, Read] = {}
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.drain)

    def submit(self, read: Read, work: Work) -> int:
        read_id = next(self._ids)
        self._reads[read_id] = read
        self._conn.send(("read", read_id, work))
        self._timer.start()
        return read_id

    def cancel(self, read_id: int) -> None:
        if self._reads.pop(read_id, None) is not None:
            self._conn.send(("cancel", read_id, None))
        if not self._reads:
            self._timer.stop()

    def drain(self) -> None:
        """Hand what the process sent to the callbacks (GUI thread)."""
        progress: dict[int, Payload] = {}
        finished: list[tuple[str, int, Payload]] = []
        try:
            while self._conn.poll(0):
                kind, read_id, payload = self._conn.recv()
                if kind == "progress":
                    progress[read_id] = payload
                else:
                    finished.append((kind, read_id, payload))
        except (EOFError, OSError):  # the process died: its reads fail, the next start a new one
            finished += [("error", read_id, "the reader process ended") for read_id in self._reads]
            _forget(self)
        ended = {read_id for _, read_id, _ in finished}
        for read_id, payload in progress.items():
            read = self._reads.get(read_id)
            if read is not None and read_id not in ended:
                read.on_progress(payload)
        for kind, read_id, payload in finished:
            read = self._reads.pop(read_id, None)
            if read is not None:  # else cancelled
                (read.on_done if kind == "done" else read.on_error)(payload)
        if not self._reads:
            self._timer.stop()


_reader: ReaderProcess | None = None


def reader() -> ReaderProcess:
    """The app's reader process (started at the first call)."""
    global _reader
    if _reader is None or not _reader.process.is_alive():
        _reader = ReaderProcess()
    return _reader


def _forget(process: ReaderProcess) -> None:
    global _reader
    if _reader is process:
        _reader = None


class Reads(QObject):
    """A view's reads in flight, by key ("run", ("overlay", path), "detail")."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ids: dict[Hashable, tuple[ReaderProcess, int]] = {}

    def start(self, key: Hashable, work: Work, on_progress: Callable[[Payload], None], on_done: Callable[[Payload], None],
              on_error: Callable[[str], object]) -> None:
        """Run `work` in the reader process (cancelling the read under `key` first)."""
        self.cancel(key)

        def done(result: Payload) -> None:
            self._ids.pop(key, None)
            on_done(result)

        def failed(message: str) -> None:
            self._ids.pop(key, None)
            on_error(message)

        process = reader()
        self._ids[key] = (process, process.submit(Read(key, on_progress, done, failed), work))

    def cancel(self, key: Hashable) -> None:
        entry = self._ids.pop(key, None)
        if entry is not None:
            entry[0].cancel(entry[1])

    def cancel_all(self) -> None:
        for key in list(self._ids):
            self.cancel(key)

    def busy(self, key: Hashable) -> bool:
        return key in self._ids

    def pid(self) -> int | None:
        """The reader process's id (None before the first read)."""
        return _reader.pid if _reader is not None else None

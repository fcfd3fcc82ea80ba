"""The reader process's loop (gui.training.reads starts it): reads one at a time, cancellable.

Qt-free, so the spawned child imports no more than the reads need. Messages
on the one duplex pipe: ("read", id, (function, args, kwargs)) and
("cancel", id, None) in; ("progress" | "done" | "error", id, payload) out.
A read is called as `function(*args, **kwargs, emit=..., should_stop=...)`;
`should_stop` reads the pipe without waiting, so a cancel is seen between
two blocks of a read. The pipe's end (the app is gone) ends the process. It
runs at a lower priority, as the planning process does.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

Work = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]  # function, args, keyword args
READER_NICENESS = 10  # on a machine with few cores the GUI's process goes first


def serve(conn: Connection) -> None:
    """The reader process: run reads one at a time, in the order asked, minus the cancelled."""
    try:
        os.nice(READER_NICENESS)
    except OSError:
        pass  # not allowed here: read at the same priority
    import numpy  # noqa: F401 (warm: the first read does not wait for numpy's import)

    pending: deque[tuple[int, Work]] = deque()
    cancelled: set[int] = set()

    def take(wait: bool) -> None:
        while conn.poll(None if wait and not pending else 0):
            kind, read_id, payload = conn.recv()  # EOFError when the app is gone: the process ends
            if kind == "read":
                pending.append((read_id, payload))
            else:
                cancelled.add(read_id)

    try:
        while True:
            take(wait=True)
            read_id, (work, args, kwargs) = pending.popleft()
            if read_id in cancelled:
                continue

            def emit(message: Any, read_id: int = read_id) -> None:
                conn.send(("progress", read_id, message))

            def should_stop(read_id: int = read_id) -> bool:
                take(wait=False)
                return read_id in cancelled

            try:
                result = work(*args, **kwargs, emit=emit, should_stop=should_stop)
            except (EOFError, BrokenPipeError):
                raise
            except Exception as error:
                conn.send(("error", read_id, f"{type(error).__name__}: {error}"))
            else:
                conn.send(("done", read_id, result))
            cancelled.discard(read_id)
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        return

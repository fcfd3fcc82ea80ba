"""One call run in a spawned child process, its progress and outcome sent over a pipe.

Seconds of Python work on a thread of the app's process (walking and
tokenizing a corpus before a run starts, saving a checkpoint as a model)
compete with the GUI thread for the GIL. On CI a launch thread listing a large
folder kept the GUI thread from running any Python for over 12 minutes; a
child has an interpreter of its own. gui.training.launch starts the child.

Messages on the pipe: ("progress", line)*, then ("done", result) or
("error", one line). A child that dies sends nothing more: the pipe's end says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from core.errors import InputError


@dataclass(frozen=True)
class Call:
    """A module-level function and its arguments, all picklable (the child gets them by pickle)."""

    function: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    takes_emit: bool = False  # called with emit=<send one progress line>


def serve_call(conn: Connection, call: Call) -> None:
    """The child's whole life: run `call`, send what it emits and how it ended."""

    def emit(line: str) -> None:
        conn.send(("progress", str(line)))

    emitting = {"emit": emit} if call.takes_emit else {}
    try:
        result = call.function(*call.args, **call.kwargs, **emitting)
    except InputError as error:
        conn.send(("error", str(error)))
    except Exception as error:  # a bug or an OS error: still one line
        conn.send(("error", one_line(error)))
    else:
        conn.send(("done", result))
    finally:
        conn.close()


def one_line(error: BaseException) -> str:
    """'TypeName: message' on one line, for an error the user did not cause."""
    return " ".join(f"{type(error).__name__}: {error}".split())

"""A launch runs in a child process: the GUI's interpreter only waits on a pipe."""

from __future__ import annotations

import os

from core.system.child_call import Call
from gui.training.launch import LaunchThread
from tests.core.system.test_child_call import counting, refusing

WAIT_MS = 60_000  # a spawned child starts a fresh interpreter


def launched(qtbot, call: Call) -> tuple[str, object, list[str]]:
    """Run `call` through a LaunchThread: which signal ended it, with what, and the progress lines."""
    thread = LaunchThread(call)
    lines: list[str] = []
    outcome: list[tuple[str, object]] = []
    thread.progress.connect(lines.append)
    thread.succeeded.connect(lambda result: outcome.append(("succeeded", result)))
    thread.failed.connect(lambda line: outcome.append(("failed", line)))
    with qtbot.waitSignal(thread.finished, timeout=WAIT_MS):
        thread.start()
    qtbot.waitUntil(lambda: bool(outcome))  # the signals are queued to this thread
    thread.wait()
    [(kind, payload)] = outcome
    return kind, payload, lines


def test_the_call_runs_in_another_process_and_its_lines_come_back_in_order(qtbot):
    kind, pid, _ = launched(qtbot, Call(os.getpid))
    assert kind == "succeeded" and isinstance(pid, int) and pid != os.getpid()
    assert launched(qtbot, Call(counting, (3,), takes_emit=True)) == (
        "succeeded", 30, ["step 1", "step 2", "step 3"])


def test_bad_input_and_a_dead_child_each_end_in_one_line(qtbot):
    assert launched(qtbot, Call(refusing, ("runs/nano",)))[:2] == (
        "failed", "run directory runs/nano already holds another run")
    kind, line, _ = launched(qtbot, Call(os._exit, (3,)))
    assert kind == "failed" and line == "the process preparing it ended without a word (exit code 3)"


def test_an_argument_that_cannot_go_to_a_child_fails_in_one_line(qtbot):
    kind, line, _ = launched(qtbot, Call(len, (lambda: 0,)))
    assert kind == "failed" and "pickle" in str(line).lower() and "\n" not in str(line)

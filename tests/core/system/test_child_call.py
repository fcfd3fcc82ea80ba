"""What a child sends back: progress lines, then its result or one line of error."""

import multiprocessing

import pytest

from core.errors import InputError
from core.system.child_call import Call, serve_call


def counting(upto: int, emit) -> int:
    for step in range(1, upto + 1):
        emit(f"step {step}")
    return upto * 10


def refusing(path: str) -> None:
    raise InputError(f"run directory {path} already holds another run")


def crashing() -> None:
    raise ValueError("no stage\n   3 in the plan")


def messages(call: Call) -> list[tuple[str, object]]:
    receiver, sender = multiprocessing.Pipe(duplex=False)
    serve_call(sender, call)  # in this process: the protocol, not the spawn, is under test here
    received = []
    while True:
        try:
            received.append(receiver.recv())
        except EOFError:  # the child closed its end: nothing more comes
            return received


def test_progress_lines_come_before_the_result():
    assert messages(Call(counting, (2,), takes_emit=True)) == [
        ("progress", "step 1"), ("progress", "step 2"), ("done", 20)]


def test_a_call_without_emit_gets_its_keyword_arguments_only():
    assert messages(Call(int, ("ff",), {"base": 16})) == [("done", 255)]


def test_bad_input_is_its_own_line_and_a_bug_is_named_on_one_line():
    assert messages(Call(refusing, ("runs/nano",))) == [
        ("error", "run directory runs/nano already holds another run")]
    assert messages(Call(crashing)) == [("error", "ValueError: no stage 3 in the plan")]


def test_a_missing_emit_parameter_is_a_bug_reported_not_a_hang():
    [(kind, line)] = messages(Call(int, ("7",), takes_emit=True))
    assert kind == "error" and line.startswith("TypeError:") and "emit" in line


@pytest.mark.parametrize("takes_emit", [False, True])
def test_the_call_is_frozen_and_pickles(takes_emit):
    import pickle

    call = Call(counting, (3,), takes_emit=takes_emit)
    assert pickle.loads(pickle.dumps(call)) == call
    with pytest.raises(AttributeError):
        call.args = ()  # type: ignore[misc]

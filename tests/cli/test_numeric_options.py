"""Every numeric option refuses 0 or a negative number where it means nothing: one line, exit 2."""

from __future__ import annotations

import argparse

import pytest

import main
from cli import build_parser
from cli.numbers import (
    fraction,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    zero_stage,
)


def _all_actions() -> list[tuple[str, argparse.Action]]:
    parser = build_parser()
    found = [("", action) for action in parser._actions]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [(name, sub_action) for sub_action in sub._actions]
    return found


def test_no_numeric_option_takes_a_bare_int_or_float():
    # A bare int/float type accepts 0, -3 and nan silently; every option uses a checked type.
    bare = [f"{command} {action.option_strings}" for command, action in _all_actions()
            if action.type in (int, float)]
    assert bare == []


@pytest.mark.parametrize("argv", [
    ["plan", "--model", "gpt-nano", "--seq", "0"],
    ["plan", "--model", "gpt-nano", "--micro-batch", "0"],
    ["plan", "--model", "gpt-nano", "--micro-batches", "-2"],
    ["plan", "--layers", "0", "--d-model", "64", "--heads", "4"],
    ["plan", "--model", "gpt-nano", "--efficiency", "0"],
    ["plan", "--model", "gpt-nano", "--efficiency", "1.5"],
    ["plan", "--model", "gpt-nano", "--time-limit", "0"],
    ["plan", "--model", "gpt-nano", "--fake-gpus", "-1"],
    ["plan", "--model", "gpt-nano", "--zero", "4"],
    ["train", "--seq-len", "0"],
    ["train", "--steps", "0"],
    ["train", "--micro-batches", "0"],
    ["train", "--lr", "-1e-3"],
    ["train", "--grad-clip", "-1"],
    ["train", "--eval-interval", "0"],
    ["train", "--nnodes", "0"],
    ["monitor", "--interval", "0"],
    ["monitor", "--count", "0"],
    ["profile", "--repeats", "0"],
    ["devices", "--fake-gpus", "-3"],
    ["--settle", "nan"],
    ["--settle", "-1"],
])
def test_meaningless_number_is_a_one_line_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main.main(argv)
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("allot: error: argument ") and err.count("\n") == 1, err


@pytest.mark.parametrize(("parse", "good", "bad"), [
    (positive_int, {"1": 1, "4096": 4096}, ["0", "-1", "1.5", "x"]),
    (nonnegative_int, {"0": 0, "7": 7}, ["-1", "x"]),
    (positive_float, {"0.5": 0.5, "1e-4": 1e-4}, ["0", "-0.1", "inf", "nan", "x"]),
    (nonnegative_float, {"0": 0.0, "2.5": 2.5}, ["-1", "nan"]),
    (fraction, {"0.4": 0.4, "1": 1.0}, ["0", "1.01"]),
    (zero_stage, {"0": 0, "3": 3}, ["-1", "4", "1.5"]),
])
def test_types(parse, good, bad):
    for text, value in good.items():
        assert parse(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


@pytest.mark.parametrize(("parse", "text", "message"), [
    (positive_int, "-05", "must be 1 or more, got -5"),  # a whole number as its value
    (nonnegative_int, "-1", "must be 0 or more, got -1"),
    (positive_float, "-1e-3", "must be above 0, got -1e-3"),  # a number as typed
    (nonnegative_float, "-2.50", "must be 0 or more, got -2.50"),
    (fraction, "0", "must be above 0, got 0"),  # above 0 first, then at most 1
    (fraction, "1.5", "must be above 0 and at most 1, got 1.5"),
    (zero_stage, "4", "must be 0, 1, 2 or 3, got 4"),
    (positive_int, "1.5", "expected a whole number, got '1.5'"),
    (positive_float, "nan", "expected a finite number, got 'nan'"),
])
def test_each_refusal_says_the_rule(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as error:
        parse(text)
    assert str(error.value) == message

"""argparse types for numeric options: 0 or a negative number where it means nothing is an error.

argparse turns the ValueError-like `ArgumentTypeError` into the parser's one-line
`allot: error: argument --seq: ...` with exit code 2, before anything runs.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", int, float)


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _parse_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _checked(parse: Callable[[str], T], allowed: Callable[[T], bool], rule: str, name: str,
             doc: str) -> Callable[[str], T]:
    """An argparse type: `parse` the text, then refuse a value that is not `allowed` ("must be {rule}")."""
    def check(text: str) -> T:
        value = parse(text)
        if not allowed(value):
            shown = text if isinstance(value, float) else value  # a float as typed, not as Python prints it
            raise argparse.ArgumentTypeError(f"must be {rule}, got {shown}")
        return value

    check.__name__ = check.__qualname__ = name
    check.__doc__ = doc
    return check


positive_int = _checked(_parse_int, lambda v: v >= 1, "1 or more", "positive_int", "A whole number of 1 or more.")
nonnegative_int = _checked(_parse_int, lambda v: v >= 0, "0 or more", "nonnegative_int",
                           "A whole number of 0 or more.")
positive_float = _checked(_parse_float, lambda v: v > 0, "above 0", "positive_float", "A finite number above 0.")
nonnegative_float = _checked(_parse_float, lambda v: v >= 0, "0 or more", "nonnegative_float",
                             "A finite number of 0 or more.")
fraction = _checked(positive_float, lambda v: v <= 1, "above 0 and at most 1", "fraction",
                    "A number above 0 and at most 1 (an efficiency).")
zero_stage = _checked(_parse_int, lambda v: 0 <= v <= 3, "0, 1, 2 or 3", "zero_stage", "A ZeRO stage: 0, 1, 2 or 3.")


def recompute_choice(text: str) -> bool | str:
    """--recompute: on, off or auto (the planner decides; docs/design.md, "Recompute as a decision")."""
    values: dict[str, bool | str] = {"on": True, "off": False, "auto": "auto"}
    if text not in values:
        raise argparse.ArgumentTypeError(f"must be on, off or auto, got {text!r}")
    return values[text]

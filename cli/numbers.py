"""argparse types for numeric options: 0 or a negative number where it means nothing is an error.

argparse turns the ValueError-like `ArgumentTypeError` into the parser's one-line
`allot: error: argument --seq: ...` with exit code 2, before anything runs.
"""

from __future__ import annotations

import argparse
import math


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


def positive_int(text: str) -> int:
    """A whole number of 1 or more."""
    value = _parse_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """A whole number of 0 or more."""
    value = _parse_int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0."""
    value = _parse_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number of 0 or more."""
    value = _parse_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def fraction(text: str) -> float:
    """A number above 0 and at most 1 (an efficiency)."""
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {text}")
    return value


def zero_stage(text: str) -> int:
    """A ZeRO stage: 0, 1, 2 or 3."""
    value = _parse_int(text)
    if not 0 <= value <= 3:
        raise argparse.ArgumentTypeError(f"must be 0, 1, 2 or 3, got {value}")
    return value

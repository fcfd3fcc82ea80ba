"""Byte sizes as people type them ("70GiB", "512 MB") and as they read them."""

from __future__ import annotations

import math
import re

from core.errors import InputError

_UNITS = {
    "": 1024**3,  # a bare number is GiB, the unit people drag budgets in
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """Parse a memory size such as "70GiB", "36 GB", "512MiB" or "24" (GiB).

    Raises:
        InputError: the text is not a size.
    """
    match = _SIZE.match(text)
    if not match or match.group(2).lower() not in _UNITS:
        raise InputError(f"'{text}' is not a memory size (use e.g. 70GiB, 36GB or 512MiB)")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not math.isfinite(value):
        raise InputError(f"'{text}' is not a finite memory size")
    return int(round(value))


def format_bytes(num_bytes: float) -> str:
    """Format a byte count the way nvidia-smi users read it: 1.50 GiB, 300.0 MiB."""
    sign = "-" if num_bytes < 0 else ""
    value = abs(float(num_bytes))
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= size:
            return f"{sign}{value / size:.2f} {unit}"
    return f"{sign}{value:.0f} B"


def format_seconds(seconds: float) -> str:
    """Format a duration with a unit that keeps three significant digits."""
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def format_count(count: float) -> str:
    """Format a large count as 6.74B, 124M, 1.05M, 38.6K."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(count) >= size:
            return f"{count / size:.3g}{unit}"
    return f"{count:.0f}"

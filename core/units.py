"""Byte sizes as people type them ("70GiB", "512 MB") and as they read them, and the unit
constants every byte and FLOP conversion goes through (GIB, MIB, GB, TFLOP, MFLOP)."""

from __future__ import annotations

import math
import re

from core.errors import InputError

GIB = 1024**3  # bytes in a GiB: the unit budgets, memory figures and plot axes use
MIB = 1024**2  # bytes in a MiB: the catalog's memory sizes, the budget bars' smallest step
GB = 1000**3  # bytes in a GB: links and transfers are GB/s (1e9 bytes/s, docs/design.md)
TFLOP = 1e12  # FLOPs in a TFLOP: device speeds are TFLOP/s (docs/design.md)
MFLOP = 1e6  # FLOPs in a MFLOP: a small layer's forward, as the profile prints it

_UNITS = {
    "": GIB,  # a bare number is GiB, the unit people drag budgets in
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": GIB,
    "tib": 1024**4,
    "k": 1024,
    "m": 1024**2,
    "g": GIB,
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


_SIZES = (("TiB", 1024**4), ("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024))


def format_bytes(num_bytes: float, digits: int = 2, unit: str | None = None) -> str:
    """Format a byte count the way nvidia-smi users read it: 1.50 GiB, 300.0 MiB.

    Args:
        num_bytes: the count.
        digits: decimals of the figure (bytes are always whole).
        unit: "TiB", "GiB", "MiB" or "KiB" fixes the unit, for figures read side by
            side (a column of device sizes); None picks the largest that is at least 1.
    """
    sign = "-" if num_bytes < 0 else ""
    value = abs(float(num_bytes))
    for name, size in _SIZES:
        if name == unit or (unit is None and value >= size):
            return f"{sign}{value / size:.{digits}f} {name}"
    return f"{sign}{value:.0f} B"


def format_gib(num_bytes: float, digits: int = 1) -> str:
    """The figure alone, in GiB ("12.3"), for pairs that name the unit once: "12.3/80.0 GiB"."""
    return f"{num_bytes / GIB:.{digits}f}"


def format_shortfall(num_bytes: float) -> str:
    """Bytes a person can read, then the exact count: '32.02 GiB (34385051652 bytes)'."""
    return f"{format_bytes(num_bytes)} ({num_bytes:.0f} bytes)"


def format_seconds(seconds: float) -> str:
    """Format a duration as people say it: three significant digits, no exponent.

    420 µs, 931 ms, 16.4 s, 44.2 min, 2.5 h, 3.1 days; "∞" for an infinite one.
    """
    if not math.isfinite(seconds):
        return "∞" if seconds > 0 else "—"
    if seconds < 0:
        return "-" + format_seconds(-seconds)
    for unit, size, limit in (("µs", 1e-6, 1e3), ("ms", 1e-3, 1e3), ("s", 1.0, 60.0),
                              ("min", 60.0, 60.0), ("h", 3600.0, 24.0)):
        # 59.96 s rounds to "60 s", which is said "1 min": a bigger unit starts at 1
        text = f"{seconds / size if unit == 'µs' else max(seconds / size, 1.0):.3g}"
        if float(text) < limit:
            return f"{text} {unit}"
    days = max(seconds / 86400.0, 1.0)
    text = f"{days:.3g}" if days < 1000 else f"{days:,.0f}"
    return f"{text} day" if text == "1" else f"{text} days"


def format_count(count: float) -> str:
    """Format a large count as 6.74B, 124M, 1.05M, 38.6K."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(count) >= size:
            return f"{count / size:.3g}{unit}"
    return f"{count:.0f}"


def format_gap(gap: float) -> str:
    """How far a time is above its bound (T / LB - 1): '+28.2%' when close, '3,838x' (times) when far.

    A percentage of six digits ('+383693.7%') says nothing a reader can hold, and
    does not fit where it is shown.
    """
    if not math.isfinite(gap):
        return "—"
    if gap < 1.0:
        return f"+{gap:.1%}"
    times = 1.0 + gap
    return f"{times:.3g}x" if times < 1000 else f"{times:,.0f}x"

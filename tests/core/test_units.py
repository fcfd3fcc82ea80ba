"""Numbers as people read them: durations without exponents, gaps that fit, sizes."""

from __future__ import annotations

import pytest

from core.units import GIB, format_bytes, format_gap, format_gib, format_seconds, parse_bytes


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0, "0 µs"),
    (4.2e-4, "420 µs"),
    (0.931, "931 ms"),
    (0.9996, "1 s"),
    (16.4, "16.4 s"),
    (59.96, "1 min"),  # not "60 s" and not "0.999 min"
    (2650.0, "44.2 min"),  # the "2.65e+03 s"
    (7200.0, "2 h"),
    (86400.0, "1 day"),
    (1e5, "1.16 days"),
    (1e9, "11,574 days"),
    (-3.0, "-3 s"),
    (float("inf"), "∞"),
])
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


def test_format_seconds_never_writes_an_exponent():
    for exponent in range(-7, 12):
        for mantissa in (1.0, 2.65, 9.999):
            assert "e" not in format_seconds(mantissa * 10.0**exponent).replace("days", "")


@pytest.mark.parametrize(("gap", "text"), [
    (0.282, "+28.2%"),
    (0.0, "+0.0%"),
    (0.999, "+99.9%"),
    (1.5, "2.5x"),
    (3836.937, "3,838x"),  # the "+383693.7%"
    (float("nan"), "—"),
])
def test_format_gap(gap, text):
    assert format_gap(gap) == text


def test_bytes_round_trip():
    assert parse_bytes("70GiB") == 70 * 1024**3
    assert format_bytes(70 * 1024**3) == "70.00 GiB"


def test_a_fixed_unit_and_precision_for_figures_read_side_by_side():
    assert format_bytes(512 * 1024**2) == "512.00 MiB"  # the unit follows the size
    assert format_bytes(512 * 1024**2, digits=0, unit="GiB") == "0 GiB"  # a column of device sizes
    assert format_bytes(79.6 * GIB, digits=0, unit="GiB") == "80 GiB"
    assert format_bytes(-1.5 * GIB, digits=1) == "-1.5 GiB"
    assert format_bytes(2048, unit="MiB") == "0.00 MiB"
    assert format_gib(12.34 * GIB) + "/" + format_gib(80 * GIB) == "12.3/80.0"
    assert format_gib(0.5 * GIB, digits=3) == "0.500"


def test_a_shortfall_reads_in_gib_first_then_the_exact_bytes():
    from core.units import format_shortfall

    assert format_shortfall(47086453508) == "43.85 GiB (47086453508 bytes)"
    assert format_shortfall(60) == "60 B (60 bytes)"

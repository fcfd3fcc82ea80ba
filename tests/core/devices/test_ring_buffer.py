"""Ring buffers: bounded, wrap around, and hand out views in time order."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.devices.ring_buffer import RingBuffer


def filled(capacity: int, rows: int) -> RingBuffer:
    buffer = RingBuffer(capacity, ("a", "b"))
    for i in range(rows):
        buffer.append(float(i), (10.0 * i, -i))
    return buffer


def test_empty() -> None:
    buffer = RingBuffer(4, ("a",))
    assert len(buffer) == 0 and buffer.last().shape == (0, 2) and buffer.latest() is None


def test_partly_filled_in_order() -> None:
    buffer = filled(5, 3)
    assert len(buffer) == 3
    assert buffer.times().tolist() == [0.0, 1.0, 2.0]
    assert buffer.column("a").tolist() == [0.0, 10.0, 20.0]
    assert buffer.last(2)[:, 2].tolist() == [-1.0, -2.0]


@pytest.mark.parametrize("rows", [5, 6, 7, 12, 23])
def test_bounded_and_wraps_around(rows: int) -> None:
    buffer = filled(5, rows)
    assert len(buffer) == 5
    assert buffer.times().tolist() == [float(i) for i in range(rows - 5, rows)]
    assert buffer.column("b", 2).tolist() == [-(rows - 2.0), -(rows - 1.0)]
    assert buffer.nbytes == 2 * 5 * 3 * 8  # preallocated, never grows


def test_windows_are_views_unless_copied() -> None:
    buffer = filled(5, 8)  # wrapped: the mirror still gives one contiguous slice
    view = buffer.last(5)
    assert np.shares_memory(view, buffer._data)
    copy = buffer.last(5, copy=True)
    assert not np.shares_memory(copy, buffer._data)
    buffer.append(99.0, (1.0, 2.0))
    assert copy[-1, 0] == 7.0 and buffer.last(1)[0, 0] == 99.0


def test_n_is_clamped() -> None:
    buffer = filled(5, 3)
    assert len(buffer.last(100)) == 3 and len(buffer.last(0)) == 0 and len(buffer.last(-2)) == 0


def test_missing_values_are_nan() -> None:
    buffer = RingBuffer(3, ("a", "b"))
    buffer.append(1.0, (None, 2.0))
    latest = buffer.latest()
    assert latest is not None and math.isnan(latest["a"]) and latest["b"] == 2.0


def test_wrong_row_length_and_capacity() -> None:
    buffer = RingBuffer(3, ("a", "b"))
    with pytest.raises(ValueError):
        buffer.append(0.0, (1.0,))
    with pytest.raises(ValueError):
        RingBuffer(0, ("a",))
    with pytest.raises(KeyError):
        buffer.column("c")


def test_clear() -> None:
    buffer = filled(3, 5)
    buffer.clear()
    assert len(buffer) == 0
    buffer.append(7.0, (1.0, 1.0))
    assert buffer.times().tolist() == [7.0]

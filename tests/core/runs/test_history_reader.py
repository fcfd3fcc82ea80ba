"""Reading a long metrics file in the background: a preview first, blocks, stop, a zoomed range."""

import pytest

from core.runs.history_reader import read_history, read_range
from tests.core.runs.test_columns import engine_rows, lines


def test_history_reader_reads_blocks_previews_first_stops_and_reads_a_range(tmp_path):
    rows = engine_rows(3000, every_val=100)
    rows[2222]["loss"] = 50.0  # a spike
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(lines(rows) + b'{"step": 3001, "lo')  # a torn last line waits for its writer
    reports = []
    read = read_history(path, reports.append, lambda: False, block_bytes=16 * 1024, snapshot_s=0.0)
    assert read is not None and len(read.curves.loss) == 3000 and read.end_offset == len(lines(rows))
    assert reports[0].preview and reports[0].done_bytes == 0 and len(reports[0].curves.loss) > 100
    assert [r.done_bytes for r in reports] == sorted(r.done_bytes for r in reports) and len(reports) > 5
    x, y = read.curves.loss.raw()
    assert (2223.0, 50.0) in zip(x.tolist(), y.tolist())
    assert [r["step"] for r in read.curves.recent] == list(range(2951, 3001))
    assert read.curves.val_loss.raw()[0].tolist() == list(range(100, 3001, 100))
    assert read_history(path, lambda _: None, lambda: True, block_bytes=16 * 1024) is None  # stopped
    detail = read_range(path, read.index, read.end_offset, 1500, 1600, "step", should_stop=lambda: False,
                        max_buckets=4096, block_bytes=16 * 1024)
    assert detail is not None and detail.loss.raw()[0].tolist() == list(range(1499, 1602))
    times = detail.loss.raw("time")[0]
    assert times.tolist() == pytest.approx([step * 0.25 for step in range(1499, 1602)])

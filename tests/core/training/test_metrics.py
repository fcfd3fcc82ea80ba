"""metrics.jsonl: the incremental tail reader, torn lines, and truncation on resume."""

import json

from core.training.metrics import MetricsTail, MetricsWriter, last_row, read_metrics, truncate_after


def row(step):
    return {"step": step, "loss": 5.0 - step / 10}


def test_the_tail_returns_only_new_rows(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.poll().rows == ()  # no file yet
    writer = MetricsWriter(path)
    writer.write(row(1))
    writer.write(row(2))
    assert [r["step"] for r in tail.poll().rows] == [1, 2]
    assert tail.poll().rows == ()
    writer.write(row(3))
    update = tail.poll()
    assert [r["step"] for r in update.rows] == [3] and not update.reset
    writer.close()


def test_a_torn_last_line_waits_until_it_is_whole(tmp_path):
    path = tmp_path / "metrics.jsonl"
    line = json.dumps(row(2))
    path.write_text(json.dumps(row(1)) + "\n" + line[:7])
    tail = MetricsTail(path)
    assert [r["step"] for r in tail.poll().rows] == [1]
    with open(path, "a") as handle:
        handle.write(line[7:] + "\n")
    assert [r["step"] for r in tail.poll().rows] == [2]


def test_a_broken_line_in_the_middle_is_skipped_and_counted(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(row(1)) + "\n{not json\n" + json.dumps(row(2)) + "\n")
    tail = MetricsTail(path)
    assert [r["step"] for r in tail.poll().rows] == [1, 2]
    assert tail.skipped_lines == 1


def test_truncate_after_drops_later_rows_and_a_torn_tail(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(row(s)) + "\n" for s in range(1, 8)) + '{"step": 8, "lo')
    assert truncate_after(path, 5) == 5
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5]
    assert path.read_text().endswith("\n")


def test_the_tail_starts_over_when_a_resume_rewrites_the_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path)
    for step in range(1, 11):
        writer.write(row(step))
    writer.close()
    tail = MetricsTail(path)
    assert len(tail.poll().rows) == 10
    truncate_after(path, 4)  # a resume from step 4 ...
    writer = MetricsWriter(path)
    for step in range(5, 16):  # ... that has already written past the old end
        writer.write(row(step))
    writer.close()
    update = tail.poll()
    assert update.reset
    assert [r["step"] for r in update.rows] == list(range(1, 16))


def test_last_row_reads_the_end(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert last_row(path) is None
    path.write_text("".join(json.dumps(row(s)) + "\n" for s in range(1, 4)) + '{"step": 4')
    assert last_row(path)["step"] == 3

"""metrics.jsonl: one JSON object per optimizer step, appended by one writer.

A row (keys always present unless marked):

    step                      optimizer steps done (1, 2, ...)
    time                      unix time the row was written
    elapsed_s                 seconds since this job started
    loss                      mean training loss over the step's micro-batches
    val_loss                  (at eval intervals only) mean validation loss
    lr                        learning rate used for this step
    grad_norm                 global gradient norm before clipping
    tokens                    tokens trained on so far
    tokens_per_s              this step's tokens / step_time_s
    step_time_s               wall time of forward, backward and update
    stage_compute_s           [per stage] seconds in that stage's forward and backward
    stage_idle_s              [per stage] step_time_s minus its compute (waiting, sending)
    stage_peak_memory_bytes   [per stage] peak memory of its device (CPU: process peak RSS)
    stage_measured_peak_memory_bytes
                              (from the first step on) [per stage] the largest peak of live
                              tensor bytes (CPU) or allocated bytes (CUDA) over the tracked
                              steps (core.training.engine.memory_tracker)
    stage_measured_memory_source
                              [per stage, beside it] "tensors" or "cuda"
    stage_measured_reserved_memory_bytes
                              (CUDA stages only) [per stage] torch.cuda.memory_reserved at the
                              end of the measured step: reserved - allocated is allocator overhead
    stage_sync_s              (data-parallel runs only) [per stage] seconds its group spent
                              reducing gradients after the last backward (largest replica)
    memory_warnings           (rarely) lines for stages whose measured peak first exceeds their
                              predicted memory by more than 10% (core.training.memory_check)

With d data-parallel replicas, stage_compute_s is the mean over the stage's
replicas (each runs m/d micro-batches) and the other per-stage figures the
largest; loss is the mean over all m micro-batches of the global batch.

Stage i is `plan.json`'s stage i. Rows up to the last checkpoint are fsynced
before the checkpoint is committed, so a crash never loses them; rows after it
are dropped on resume (`truncate_after`), so the curve stays continuous.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO


class MetricsWriter:
    """Appends rows; `sync()` makes every row so far durable."""

    def __init__(self, path: Path):
        self.path = path
        self._file: TextIO = open(path, "a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row, separators=(",", ":")) + "\n")
        self._file.flush()

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()


@dataclass(frozen=True)
class TailUpdate:
    """New rows since the last poll. `reset`: the file was truncated or replaced
    (a resume dropped rows after its checkpoint), so `rows` is the whole file again."""

    rows: tuple[dict[str, Any], ...]
    reset: bool = False


class MetricsTail:
    """Reads metrics.jsonl incrementally: each poll returns only the new rows.

    A torn last line (the writer is mid-write, or was killed mid-write) is left
    for a later poll; a line that is not JSON is skipped and counted.
    """

    def __init__(self, path: Path | str, offset: int = 0, inode: int | None = None):
        """Read from byte `offset` of the file with this `inode` (a reader before this one
        stopped there); a file replaced since then is read again from its start."""
        self.path = Path(path)
        self.offset = offset
        self.skipped_lines = 0
        self._inode = inode

    def poll(self) -> TailUpdate:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return TailUpdate(())
        reset = False
        if stat.st_size < self.offset or (self._inode is not None and stat.st_ino != self._inode):
            self.offset, reset = 0, True
        self._inode = stat.st_ino
        if stat.st_size == self.offset:
            return TailUpdate((), reset)
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read(stat.st_size - self.offset)
        complete = chunk.rfind(b"\n") + 1  # only whole lines; a torn tail waits
        self.offset += complete
        return TailUpdate(tuple(self._parse(chunk[:complete])), reset)

    def _parse(self, data: bytes) -> list[dict[str, Any]]:
        rows, skipped = parse_rows(data)
        self.skipped_lines += skipped
        return rows


def parse_rows(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of whole lines, and how many lines were not JSON (blank ones aside)."""
    rows, skipped = [], 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            skipped += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows, skipped


def read_metrics(path: Path | str) -> list[dict[str, Any]]:
    """Every complete row of a metrics file (empty if there is none)."""
    return list(MetricsTail(path).poll().rows)


def last_row(path: Path | str, tail_bytes: int = 65536) -> dict[str, Any] | None:
    """The last complete row, reading only the end of the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            handle.seek(max(0, size - tail_bytes))
            data = handle.read()
    except OSError:
        return None
    for line in reversed(data[: data.rfind(b"\n") + 1].splitlines()):
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(row, dict):
            return row
    return None


def truncate_after(path: Path, max_step: int) -> int:
    """Drop rows past `max_step` and any torn last line, in place. Returns rows kept.

    Used on resume (the job is not running): rows after the checkpoint being
    resumed from are re-made by the resumed run. The file is replaced atomically.
    """
    if not path.exists():
        return 0
    data = path.read_bytes()
    keep_bytes, kept, position = 0, 0, 0
    for line in data.splitlines(keepends=True):
        position += len(line)
        if not line.endswith(b"\n"):
            break
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            break
        if not isinstance(row, dict) or int(row.get("step", 0)) > max_step:
            break
        keep_bytes, kept = position, kept + 1
    if keep_bytes != len(data):
        # A new file (new inode), not an in-place truncate: a tail reader then
        # notices the change even if the file has grown past its offset again.
        from core.training.run_dir import atomic_write_bytes

        atomic_write_bytes(path, data[:keep_bytes])
    return kept


def format_row(row: dict[str, Any], steps: int) -> str:
    """A one-line progress report of a metrics row."""
    val = f" | val {row['val_loss']:.4f}" if "val_loss" in row else ""
    rate = row.get("tokens_per_s") or 0.0
    return (f"step {row['step']}/{steps} | loss {row['loss']:.4f}{val} | lr {row['lr']:.2e} | "
            f"{rate:,.0f} tok/s | {1000 * row['step_time_s']:.0f} ms/step")

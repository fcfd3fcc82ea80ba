"""The complete memory model against what a run measures, and the flag of a stage above it
(docs/design.md, "The complete memory model"; issue 21)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from core.training.engine.loop import StepStats, train_loop
from core.training.launcher import wait_run
from main import main
from tests.core.training.support import tiny_config, write_corpus

TOLERANCE = 0.10  # the slow tier's bound; docs/benchmarks.md, "Memory model", has the 5% target's table


class _Engine:
    """An engine whose stages measure fixed peaks: the loop's flag on its own."""

    is_writer = True

    def __init__(self, measured: tuple[int, ...]):
        self.measured = measured

    def restore(self) -> int:
        return 0

    def train_step(self, step: int, lr: float) -> None:
        pass

    def evaluate(self) -> None:
        pass

    def collect(self, stop_requested: bool) -> StepStats:
        return StepStats(loss=1.0, grad_norm=1.0, step_time_s=0.1, stage_compute_s=(0.05, 0.05),
                         stage_idle_s=(0.0, 0.0), stage_peak_memory_bytes=(0, 0),
                         stage_measured_peak_memory_bytes=self.measured,
                         stage_measured_memory_source=("tensors", "tensors"))

    def save_checkpoint(self, step: int) -> None:
        pass


class _Writer:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def write(self, row: dict) -> None:
        self.rows.append(row)

    def sync(self) -> None:
        pass


def test_a_stage_above_its_prediction_by_more_than_10_percent_is_flagged_once_after_the_first_step(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = replace(tiny_config(tmp_path / "corpus.txt", steps=4), checkpoint_interval=100, eval_interval=100)
    writer = _Writer()
    # predictions deliberately small for stage 1: 1,000 bytes against 1,200 measured (20% above)
    train_loop(_Engine((1_050, 1_200)), config, writer, lambda row: None, lambda: False,  # type: ignore[arg-type]
               predicted_memory_bytes=(1_000.0, 1_000.0))
    flagged = [row.get("memory_warnings") for row in writer.rows]
    assert flagged[0] is None  # the first step creates the optimizer states: not judged
    assert flagged[1] == ["stage 2 of 2: measured peak memory 1.17 KiB is 20% above its predicted 1000 B: "
                          "the memory model under-counts this stage"]
    assert flagged[2:] == [None, None]  # once
    log = capsys.readouterr().out
    assert log.count("warning: stage 2 of 2: measured peak memory 1.17 KiB is 20% above") == 1
    assert "stage 1 of 2" not in log  # 5% above: within


@pytest.mark.slow  # two pipeline runs of two stages
@pytest.mark.parametrize("extra", [("--schedule", "1f1b"), ("--schedule", "gpipe", "--recompute")])
def test_predicted_peak_memory_is_within_10_percent_of_the_measured_one(tmp_path: Path, extra: tuple[str, ...],
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write_corpus(tmp_path / "corpus.txt", lines=2000)
    run_dir = tmp_path / "run"
    code = main(["train", "--model", "gpt-nano", "--devices", "2xcpu:1GiB", "--data", str(corpus), "--run-dir",
                 str(run_dir), "--seq-len", "64", "--micro-batch-size", "4", "--micro-batches", "4", "--steps", "2",
                 "--eval-interval", "100", "--detach", *extra])
    assert code == 0
    assert wait_run(run_dir, timeout_s=300).state == "finished"
    report = json.loads((run_dir / "report.json").read_text())
    ratios = [stage["memory_measured_over_predicted"] for stage in report["stages"]]
    assert len(ratios) == 2 and all(abs(ratio - 1) <= TOLERANCE for ratio in ratios), ratios
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert not any("memory_warnings" in row for row in rows)

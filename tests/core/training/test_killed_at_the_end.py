"""A job killed after its last checkpoint but before it wrote "finished" reads as finished.

The job runs in a subprocess whose seam (core.training.job.before_final_status)
kills it with SIGKILL exactly between the last checkpoint and the status write.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import InputError
from core.training.engine import checkpoint as ckpt
from core.training.metrics import read_metrics
from core.training.plan_file import read_plan_file
from core.training.run_dir import read_status
from core.training.runner import prepare_new_run, prepare_resume
from tests.core.training.support import tiny_config, write_corpus, write_plan

pytestmark = pytest.mark.slow  # a training job in a subprocess

ROOT = Path(__file__).resolve().parents[3]
KILLED_JOB = """
import os, signal, sys
from core.training import job

def die(paths):
    os.kill(os.getpid(), signal.SIGKILL)

job.before_final_status = die
job.main([sys.argv[1]])
"""


@pytest.fixture(scope="module")
def killed_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The run (killed at the seam by a real job) and an untouched copy of it: one training job for
    the module, since each test below changes the run."""
    tmp_path = tmp_path_factory.mktemp("killed")
    corpus = write_corpus(tmp_path / "corpus.txt")
    config = tiny_config(corpus, steps=6, checkpoint_interval=3, eval_interval=100)
    run_dir = tmp_path / "run"
    prepare_new_run(config, run_dir, read_plan_file(write_plan(tmp_path / "plan.json")), emit=lambda _: None)
    result = subprocess.run([sys.executable, "-c", KILLED_JOB, str(run_dir)], cwd=ROOT, timeout=600,
                            capture_output=True, text=True)
    assert result.returncode == -9, result.stderr  # really killed, at the seam
    raw = json.loads((run_dir / "status.json").read_text())
    assert raw["state"] == "running"  # what a kill there leaves behind
    assert ckpt.checkpoint_step(ckpt.latest_checkpoint(run_dir / "checkpoints")) == 6
    pristine = tmp_path_factory.mktemp("pristine") / "run"
    shutil.copytree(run_dir, pristine, symlinks=True)
    return run_dir, pristine


@pytest.fixture
def killed_at_the_end(killed_once: tuple[Path, Path]) -> Path:
    """The killed run as the job left it, at the path it ran at (its files may name it)."""
    run_dir, pristine = killed_once
    shutil.rmtree(run_dir)
    shutil.copytree(pristine, run_dir, symlinks=True)
    return run_dir


def test_the_status_check_marks_it_finished_with_history_intact(killed_at_the_end: Path) -> None:
    metrics_before = (killed_at_the_end / "metrics.jsonl").read_bytes()
    status = read_status(killed_at_the_end)
    assert status.state == "finished" and status.error is None and status.step == 6
    raw = json.loads((killed_at_the_end / "status.json").read_text())
    assert raw["state"] == "finished"  # written down, not only read so
    assert (killed_at_the_end / "metrics.jsonl").read_bytes() == metrics_before
    assert [row["step"] for row in read_metrics(killed_at_the_end / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert [ckpt.checkpoint_step(p) for p in ckpt.list_checkpoints(killed_at_the_end / "checkpoints")] == [3, 6]


def test_runs_lists_it_finished(killed_at_the_end: Path, capsys: pytest.CaptureFixture) -> None:
    import main

    assert main.main(["runs", str(killed_at_the_end.parent), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)
    assert (run["state"], run["step"], run["steps"]) == ("finished", 6, 6)


def test_resume_sees_a_finished_run_and_can_train_on(killed_at_the_end: Path) -> None:
    with pytest.raises(InputError, match="already at step 6"):
        prepare_resume(killed_at_the_end)
    assert read_status(killed_at_the_end).state == "finished"
    context = prepare_resume(killed_at_the_end, steps=8)  # more steps: continues from the last checkpoint
    assert context.config.steps == 8


def test_a_run_killed_before_its_last_checkpoint_still_reads_failed(killed_at_the_end: Path) -> None:
    ckpt.prune_checkpoints(killed_at_the_end / "checkpoints", keep=2)
    last = ckpt.latest_checkpoint(killed_at_the_end / "checkpoints")
    os.rename(last, last.parent / ".tmp-step_00000006")  # as if the kill came before the commit
    assert read_status(killed_at_the_end).state == "failed"

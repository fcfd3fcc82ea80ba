"""benchmarks/gpu_check.py where no GPU is: it skips, says why, exits 0, and needs no Qt or highspy.

A sitecustomize on PYTHONPATH blocks PySide6, pyqtgraph and highspy in the
script and in every main.py it starts, as on a GPU box that has only torch,
numpy and nvidia-ml-py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.core.training.support import write_corpus

ROOT = Path(__file__).resolve().parents[2]
BLOCKER = """
import sys

class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("PySide6", "shiboken6", "pyqtgraph", "highspy"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


@pytest.fixture
def gpu_box_env(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(BLOCKER)
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(folder), str(ROOT)]))


def run(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_the_blocker_blocks(gpu_box_env: dict[str, str]) -> None:
    for module in ("PySide6", "highspy", "pyqtgraph"):
        assert run(gpu_box_env, "-c", f"import {module}").returncode != 0


def test_without_a_gpu_it_skips_and_says_why(gpu_box_env: dict[str, str]) -> None:
    result = run(gpu_box_env, "benchmarks/gpu_check.py")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("gpu_check: skipped: no NVIDIA GPU: NVML"), result.stdout


@pytest.mark.slow  # two subprocesses that import torch: profile, then train
def test_the_commands_it_runs_need_no_qt_or_highspy(gpu_box_env: dict[str, str], tmp_path: Path) -> None:
    """The same profile and train commands it runs on cuda:0, here on the CPU."""
    corpus = write_corpus(tmp_path / "corpus.txt", lines=2000)
    shape = ["--model", "gpt-nano", "--devices", "cpu:1GiB", "--precision", "fp32", "--seq-len", "32",
             "--micro-batch-size", "2", "--micro-batches", "2"]
    profile = tmp_path / "profile.json"
    result = run(gpu_box_env, "main.py", "profile", *shape, "--repeats", "1", "--out", str(profile))
    assert result.returncode == 0, result.stderr
    result = run(gpu_box_env, "main.py", "train", *shape, "--engine", "local", "--steps", "2", "--profile",
                 str(profile), "--run-dir", str(tmp_path / "run"), "--data", str(corpus))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "report.json").is_file()


@pytest.mark.slow  # profile and train in subprocesses that import torch
def test_its_dry_run_compares_per_stage_compute_on_the_cpu(gpu_box_env: dict[str, str]) -> None:
    """--dry-run: profile, train and the per-stage table on the CPU, without Qt or highspy."""
    result = run(gpu_box_env, "benchmarks/gpu_check.py", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("profile: the layers one by one sum to ") for line in lines), result.stdout
    header = next(line for line in lines if line.startswith("| stage |"))
    assert "| predicted compute ms | measured ms (median) | ratio | layer sum predicted ms | ratio |" in header
    (row,) = [line for line in lines if line.startswith("| 0 |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    predicted, measured, ratio, layer_sum = (float(cell) for cell in cells[1:5])
    assert predicted > 0 and measured > 0 and ratio == pytest.approx(measured / predicted, abs=2e-3)
    assert layer_sum > 0
    assert lines[-1].startswith("gpu_check: dry run on the CPU, ")

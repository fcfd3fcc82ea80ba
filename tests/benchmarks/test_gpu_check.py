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


def ratio_of_printed(ratio: str, numerator: str, denominator: str) -> bool:
    """The printed ratio is the quotient of the unrounded figures: within what rounding each printed
    figure to its last digit allows (0.020 GiB may be anything from 0.0195 to 0.0205)."""
    def bounds(cell: str) -> tuple[float, float]:
        half = 0.5 * 10.0 ** -(len(cell.split(".")[1]) if "." in cell else 0)
        return float(cell) - half, float(cell) + half

    (low_n, high_n), (low_d, high_d), (low_r, high_r) = bounds(numerator), bounds(denominator), bounds(ratio)
    return low_n / high_d <= high_r and low_r <= high_n / low_d


@pytest.mark.slow  # profile, then train: two subprocesses that import torch
def test_a_dry_run_compares_memory_and_time_on_the_cpu_without_qt_or_highspy(gpu_box_env: dict[str, str]) -> None:
    """The commands it runs on cuda:0, here on the CPU, and the table it prints from the run."""
    result = run(gpu_box_env, "benchmarks/gpu_check.py", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("gpu_check: dry run on the CPU")
    assert any(line.startswith("profile: the layers one by one sum to ") for line in lines), result.stdout
    header = next(line for line in lines if line.startswith("| stage |"))
    assert "| predicted compute ms | measured ms (median) | ratio | layer sum predicted ms | ratio |" in header
    assert "max_memory_allocated GiB" in header and "reserved - allocated GiB" in header
    (row,) = [line for line in lines if line.startswith("| 0 |")]  # gpt-nano on one CPU: one stage
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert float(cells[1]) > 0 and float(cells[2]) > 0 and float(cells[4]) > 0
    assert ratio_of_printed(cells[3], cells[2], cells[1])  # measured / predicted time
    assert float(cells[6]) > 0 and float(cells[7]) > 0 and ratio_of_printed(cells[8], cells[7], cells[6])
    assert abs(float(cells[8]) - 1) <= 0.10  # the complete memory model, on the tracker's tensor bytes
    assert float(cells[9]) == 0.0 and float(cells[10]) == 0.0  # no allocator, no CUDA context on a CPU
    assert lines[-1].startswith("gpu_check: dry run on the CPU, ")

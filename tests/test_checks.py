"""ruff and mypy are part of the test command, so CI enforces them (pyproject.toml configures both)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)


_started: dict[str, subprocess.Popen[str]] = {}


def start_mypy() -> None:
    """Start mypy beside the suite (tests/conftest.py, once the mypy test is collected): a cold run
    takes half a minute of mostly one core, which the suite's waits on torchrun and subprocesses
    then cover. Its output goes to pipes read by the test."""
    if "mypy" not in _started:
        _started["mypy"] = subprocess.Popen([sys.executable, "-m", "mypy"], cwd=ROOT, text=True,
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def mypy_result() -> tuple[int, str]:
    """mypy's exit code and output: from the run started beside the suite, else run now."""
    started = _started.pop("mypy", None)
    if started is None:
        result = run_check("mypy")
        return result.returncode, result.stdout + result.stderr
    output, _ = started.communicate(timeout=900)
    return started.returncode, output


def test_ruff_is_clean() -> None:
    result = run_check("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    """Over core/, gui/, cli/ and main.py (`files` in [tool.mypy])."""
    returncode, output = mypy_result()
    assert returncode == 0, output


def test_the_checks_cover_the_whole_project() -> None:
    """Narrowing mypy's files or dropping RUF100 (stale noqa comments) would pass the two above."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'files = ["core", "gui", "cli", "main.py"]' in text
    assert '"RUF100"' in text

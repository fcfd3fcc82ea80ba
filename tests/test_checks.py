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


def test_ruff_is_clean() -> None:
    result = run_check("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    """Over core/, gui/, cli/ and main.py (`files` in [tool.mypy])."""
    result = run_check("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_checks_cover_the_whole_project() -> None:
    """Narrowing mypy's files or dropping RUF100 (stale noqa comments) would pass the two above."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'files = ["core", "gui", "cli", "main.py"]' in text
    assert '"RUF100"' in text

"""Every command the program prints or documents is the README's `python3 main.py`, never `python main.py`
(on a fresh Debian there is no `python`)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BARE_PYTHON = re.compile(r"\bpython (main\.py|benchmarks/|install\.py)")


def test_no_hint_says_python_without_the_3():
    offenders = []
    for folder in ("cli", "core", "gui", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if BARE_PYTHON.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    documents = ["main.py", "install.py", "README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
    for name in documents:
        for number, line in enumerate((ROOT / name).read_text(encoding="utf-8").splitlines(), 1):
            if BARE_PYTHON.search(line):
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert offenders == []

"""core/ never imports Qt or gui/ (docs/design.md, "Conventions"): read every import statement in it."""

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"
BANNED = ("PySide6", "pyqtgraph", "gui", "shiboken6")


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_core_imports_no_qt():
    offenders = [
        f"{path.relative_to(CORE.parent)}: {name}"
        for path in sorted(CORE.rglob("*.py"))
        for name in imported_modules(path)
        if name.split(".")[0] in BANNED
    ]
    assert offenders == []


def test_the_rule_sees_an_offending_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from PySide6 import QtCore\n")
    assert imported_modules(sample) == ["PySide6"]

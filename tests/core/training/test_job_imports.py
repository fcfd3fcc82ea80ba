"""The job that follows a pipeline run (core.training.job, which starts torchrun through
core.training.engine.pipeline_launch) imports no torch: it starts torchrun at once instead of
after about 2 s of CPU, while the stage processes import torch anyway. Read from the import
statements that run when a module is imported (not those inside functions)."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from tests.core.test_import_cycles import ROOT, _type_checking_only

JOB_MODULES = ("core.training.job", "core.training.engine.pipeline_launch")


@cache
def import_time_imports(path: Path, package: str) -> frozenset[str]:
    """What importing the file imports: statements at module or class level, and their parent packages."""
    names: set[str] = set()
    todo: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"))]
    while todo:
        for child in ast.iter_child_nodes(todo.pop()):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) or _type_checking_only(child):
                continue
            if isinstance(child, ast.Import):
                names |= {alias.name for alias in child.names}
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                names |= {base, *(f"{base}.{alias.name}" for alias in child.names)}
            todo.append(child)
    return frozenset(".".join(name.split(".")[:i]) for name in names for i in range(1, name.count(".") + 2))


def imported_on_import(start: tuple[str, ...], root: Path = ROOT) -> set[str]:
    """Every module (ours, followed; others, named) that importing `start` imports."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        base = root / Path(*name.split("."))
        path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if path.is_file():
            todo += import_time_imports(path, name if path.name == "__init__.py" else name.rpartition(".")[0])
    return seen


def test_the_pipeline_job_imports_no_torch():
    imported = imported_on_import(JOB_MODULES)
    assert "core.training.engine.context" in imported  # the reader sees the job's own imports
    assert "torch" not in imported


def test_the_reader_sees_torch_behind_a_module_of_ours():
    assert "torch" in imported_on_import(("core.training.engine.stages",))
    assert "torch" not in imported_on_import(("core.training.engine.layout",))

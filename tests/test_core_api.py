"""gui/ and cli/ use core only through its front modules (docs/architecture.md): read every import in them.

The modules behind a front may move or split without touching a view or a
command; a name gui/ or cli/ needs is re-exported by its domain's front.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRONTS = {
    "core.planning.front_door",        # model choice + devices + setup -> Problem -> Plan; solvers, exports
    "core.planning.planning_process",  # the app's planning process (it imports the front door)
    "core.devices.inventory",          # what the machine has: discovery, gateways, catalog, host speed
    "core.devices.telemetry",          # what the devices are doing: the sampler
    "core.devices.stand_ins",          # stand-ins for a project's missing GPUs (imports core.project)
    "core.training.launcher",          # start, stop, resume, list and follow runs; run config, profiles
    "core.training.run_info",          # a run read back: RunInfo and its report
    "core.runs.history_reader",        # a run's history as curves, and the reader process
}
SHARED = {"core.errors", "core.units", "core.project",
          "core.system.durable", "core.system.disk_cache", "core.system.child_call"}
ALLOWED = FRONTS | SHARED


def core_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every core module the file imports, function-level and TYPE_CHECKING ones
    included; `from core.x import y` names core.x.y where y is a module of its own."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = [f"{node.module}.{alias.name}" for alias in node.names
                          if _is_module(f"{node.module}.{alias.name}")]
            found += [(node.lineno, name) for name in submodules or [node.module]]
    return [(line, name) for line, name in found if name.split(".")[0] == "core"]


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def offenders(root: Path = ROOT) -> list[str]:
    return [f"{path.relative_to(root)}:{line}: {name}"
            for top in ("gui", "cli") for path in sorted((root / top).rglob("*.py"))
            for line, name in core_imports(path) if name not in ALLOWED]


def test_gui_and_cli_import_only_the_front_modules() -> None:
    assert offenders() == []


def test_every_allowed_module_exists() -> None:
    assert [name for name in sorted(ALLOWED) if not _is_module(name)] == []


def test_the_rule_sees_an_internal_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from core.training.engine import checkpoint\n"
                      "    from core.planning.costs import step_time_s\n"
                      "    from core.planning.front_door import plan_model\n")
    assert core_imports(sample) == [(2, "core.training.engine.checkpoint"), (3, "core.planning.costs"),
                                    (4, "core.planning.front_door")]

"""The two test tiers (docs/architecture.md): `python3 -m pytest -m "not slow"` is the fast
tier and touches every package; `python3 -m pytest`, which CI runs, is everything.

Read from the test files' source, not by collecting them: collecting the suite
imports torch, transformers and Qt, which would cost the fast tier seconds.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def _is_slow_mark(node: ast.expr) -> bool:
    """`pytest.mark.slow`, alone or in a list of marks."""
    if isinstance(node, ast.List | ast.Tuple):
        return any(_is_slow_mark(item) for item in node.elts)
    return isinstance(node, ast.Attribute) and node.attr == "slow"


def _has_slow_decorator(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> bool:
    return any(_is_slow_mark(decorator) for decorator in node.decorator_list)


def fast_test_names(path: Path) -> list[str]:
    """The tests of one file that `-m "not slow"` keeps."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
            if _is_slow_mark(node.value):
                return []
    names = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            if not _has_slow_decorator(node):
                names.append(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test") and not _has_slow_decorator(node):
            names += [f"{node.name}.{item.name}" for item in node.body
                      if isinstance(item, ast.FunctionDef) and item.name.startswith("test")
                      and not _has_slow_decorator(item)]
    return names


def test_the_fast_tier_touches_every_test_package() -> None:
    packages = sorted({path.parent for path in TESTS.rglob("test_*.py")})
    assert len(packages) >= 15  # tests/, core/{devices,model,planning,system,training{,/engine}}, cli, gui/* ...
    untouched = [str(package.relative_to(ROOT)) for package in packages
                 if not any(fast_test_names(path) for path in package.glob("test_*.py"))]
    assert untouched == [], f"every test of these is marked slow: {untouched}"


def test_the_reader_sees_each_way_of_marking_slow(tmp_path: Path) -> None:
    """A marker the reader missed would make the check above pass for a package whose tests are all slow."""
    source = '''
import pytest

def test_fast(): ...

@pytest.mark.slow
def test_decorated(): ...

@pytest.mark.parametrize("x", [1])
@pytest.mark.slow
def test_among_other_marks(x): ...

@pytest.mark.slow
class TestSlowClass:
    def test_in_slow_class(self): ...

class TestMixed:
    def test_fast_method(self): ...

    @pytest.mark.slow
    def test_slow_method(self): ...
'''
    (tmp_path / "test_example.py").write_text(source, encoding="utf-8")
    assert fast_test_names(tmp_path / "test_example.py") == ["test_fast", "TestMixed.test_fast_method"]
    for module_mark in ("pytest.mark.slow", "[pytest.mark.slow, pytest.mark.timeout(5)]"):
        (tmp_path / "test_module.py").write_text(f"import pytest\npytestmark = {module_mark}\n{source}",
                                                 encoding="utf-8")
        assert fast_test_names(tmp_path / "test_module.py") == []


def test_ci_and_the_marker_registry_keep_both_tiers() -> None:
    """CI runs everything (no -m), and `slow` is a registered marker (a typo'd one would only warn)."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python3 -m pytest\n" in ci or ci.rstrip().endswith("python3 -m pytest")
    assert '"slow: ' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")

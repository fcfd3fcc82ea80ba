"""The layer-graph cache on disk: keyed by all it depends on, safe when corrupt, and torch-free when warm.

Every test points ALLOT_CACHE_DIR at its own folder (tests/conftest.py already
keeps the whole session away from the user's cache dir).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import main
from core.devices.host_speed import CACHE_FILE as HOST_SPEED_FILE
from core.devices.host_speed import host_speed, write_cached
from core.model.graph import _cached_graph, build_layer_graph, graph_cache_key, graph_layers
from core.model.model_spec import resolve_model
from core.planning.device_resolution import host_block
from core.planning.setup import TrainingSetup
from core.system import disk_cache

ROOT = Path(__file__).resolve().parents[3]
SETUP = TrainingSetup(micro_batch_size=1, seq_len=32, precision="fp32")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("ALLOT_CACHE_DIR", str(folder))
    _cached_graph.cache_clear()  # the in-memory cache would hide the disk
    yield folder
    _cached_graph.cache_clear()


def entries(folder: Path, kind: str = "graphs") -> list[Path]:
    return sorted((folder / kind).glob("*.json"))


def fresh_graph(spec_name: str, setup: TrainingSetup = SETUP):
    _cached_graph.cache_clear()
    return build_layer_graph(resolve_model(spec_name), setup)


def test_a_measured_graph_is_stored_and_read_back_equal(cache: Path) -> None:
    measured = fresh_graph("gpt-nano")
    assert len(entries(cache)) == 1
    stored = json.loads(entries(cache)[0].read_text())
    assert stored["format"] == disk_cache.FORMAT and stored["version"] == disk_cache.VERSION
    assert stored["key"]["versions"]["torch"] and stored["key"]["versions"]["allot"]
    read = fresh_graph("gpt-nano")
    assert graph_layers(read) == graph_layers(measured)
    assert dict(read.nodes(data=True)) == dict(measured.nodes(data=True))
    assert read.graph == measured.graph and list(read.edges(data=True)) == list(measured.edges(data=True))


@pytest.mark.parametrize("change", [
    {"seq_len": 64}, {"micro_batch_size": 2}, {"precision": "bf16"}, {"recompute": True}, {"mode": "infer"},
    {"finetune": {"method": "lora"}},
])
def test_every_input_of_a_graph_is_in_its_key(cache: Path, change: dict) -> None:
    fresh_graph("gpt-nano")
    other = TrainingSetup.from_dict({**SETUP.to_dict(), **change})
    fresh_graph("gpt-nano", other)
    assert len(entries(cache)) == 2


def test_the_config_and_versions_are_in_the_key() -> None:
    spec = resolve_model("gpt-nano")
    key = graph_cache_key(spec, "fp32", True, False, 1, 32)
    assert key["model"]["gpt"]["n_layer"] == 5
    other = graph_cache_key(resolve_model("gpt-micro"), "fp32", True, False, 1, 32)
    assert disk_cache.entry_path("graphs", key) != disk_cache.entry_path("graphs", other)
    assert set(key["versions"]) == {"torch", "transformers", "allot"}


@pytest.mark.parametrize("damage", [
    b"", b"{not json", b"\xff\xfe binary", b'{"format": "allot-cache", "version": 999}',
    b'[1, 2, 3]',
])
def test_a_corrupt_entry_is_measured_again(cache: Path, damage: bytes) -> None:
    measured = fresh_graph("gpt-nano")
    entries(cache)[0].write_bytes(damage)
    again = fresh_graph("gpt-nano")
    assert graph_layers(again) == graph_layers(measured)
    assert json.loads(entries(cache)[0].read_text())["value"]["costs"]  # and repaired


def test_an_entry_with_a_broken_value_is_not_trusted(cache: Path) -> None:
    measured = fresh_graph("gpt-nano")
    path = entries(cache)[0]
    stored = json.loads(path.read_text())
    stored["value"]["costs"][1]["flops"] = "lots"
    path.write_text(json.dumps(stored))
    assert graph_layers(fresh_graph("gpt-nano")) == graph_layers(measured)


def test_no_cache_neither_reads_nor_writes(cache: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["plan", "--model", "gpt-nano", "--devices", "2xA10", "--seq", "32", "--no-compare", "--json",
            "--recompute", "off"]  # one graph (auto may measure the model with recompute too)
    assert main.main([*argv, "--no-cache"]) == 0
    assert not cache.exists()
    _cached_graph.cache_clear()
    assert main.main(argv) == 0
    assert len(entries(cache)) == 1
    entries(cache)[0].write_text(entries(cache)[0].read_text().replace('"flops":', '"flops_x":'))
    _cached_graph.cache_clear()
    assert main.main([*argv, "--no-cache"]) == 0  # a bad entry is never read with --no-cache either
    capsys.readouterr()


def test_cache_clear_removes_entries_and_nothing_else(cache: Path, capsys: pytest.CaptureFixture) -> None:
    fresh_graph("gpt-nano")
    (cache / "users-file.txt").write_text("keep me")
    assert main.main(["cache"]) == 0
    assert "graphs          1 entries" in capsys.readouterr().out
    assert main.main(["cache", "--clear"]) == 0
    assert "removed 1 cache entries" in capsys.readouterr().out
    assert entries(cache) == [] and (cache / "users-file.txt").read_text() == "keep me"


WARM_PLAN = """
import sys
import main
code = main.main(sys.argv[1:])
print("TORCH", "torch" in sys.modules, "TRANSFORMERS", "transformers" in sys.modules)
sys.exit(code)
"""


def run_python(cache: Path, code: str, *argv: str) -> str:
    env = dict(os.environ, ALLOT_CACHE_DIR=str(cache))
    result = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_plan(cache: Path, *argv: str) -> str:
    return run_python(cache, WARM_PLAN, *argv)


APP_JOB = """
import sys
from core.planning.setup import TrainingSetup
from core.model.config import ModelChoice
from core.planning.planning_process import plan_job
from core.project import simulated_entry
setup = TrainingSetup(micro_batch_size=1, seq_len=128)
result = plan_job(ModelChoice(source="preset", name="gpt2"), setup, (simulated_entry("A100-80GB"),),
                  "exact", True, 5.0)
assert result.plan.feasible
print("TORCH", "torch" in sys.modules)
"""


@pytest.mark.slow  # three subprocesses, one imports torch and transformers and measures gpt2
def test_a_cached_plan_imports_no_torch_in_the_cli_or_the_apps_planning_process(cache: Path) -> None:
    """The whole report, accelerate's column included, from the cache: no torch, no transformers.
    The app's first plan of the same model (its planning process) reads the same entry."""
    argv = ("plan", "--model", "gpt2", "--devices", "A10:2GiB,2xRTX4090:2GiB", "--seq", "128")
    cold = run_plan(cache, *argv)
    assert "TORCH True" in cold
    warm = run_plan(cache, *argv)
    assert "TORCH False TRANSFORMERS False" in warm
    assert _without_times(warm.replace("TORCH False TRANSFORMERS False", "")) == \
        _without_times(cold.replace("TORCH True TRANSFORMERS True", ""))
    # the app also plans with the host's speed, timed once per machine on the model's block: here, by
    # this process, in the job's precision on gpt2's block at its setup
    block = host_block(resolve_model("gpt2"), TrainingSetup(micro_batch_size=1, seq_len=128))
    write_cached(cache / HOST_SPEED_FILE, host_speed("bf16", block))
    app = run_python(cache, APP_JOB)
    assert "TORCH False" in app, app


def _without_times(report: str) -> list[str]:
    """The report less its solve-time lines (they differ run to run)."""
    return [line for line in report.splitlines() if "solved in" not in line and line.strip()]



WARM_GPT2 = """
import core.model.warm_cache as warm
warm.all_preset_names = lambda: ["gpt2"]  # the shipped models' warming, on one of them
print("WARMED", warm.warm_shipped_models())
"""


@pytest.mark.slow  # gpt2 measured 6 times in one subprocess, then planned in two more
def test_after_warming_a_first_plan_imports_neither_torch_nor_transformers(cache: Path, tmp_path: Path) -> None:
    """`cache --warm` (install.py) measures a shipped model's graphs and keeps its module tree:
    its first plan reads them, and accelerate's column is placed from the tree in a process
    of its own (core.planning.accelerate_baseline), the same answer as a plan measured from nothing."""
    assert "WARMED 1" in run_python(cache, WARM_GPT2)
    argv = ("plan", "--model", "gpt2", "--devices", "A10:4GiB,2xRTX4090:4GiB")
    first = run_plan(cache, *argv)
    assert "TORCH False TRANSFORMERS False" in first
    assert len(entries(cache, "accelerate")) == 1  # written by the placing process
    unwarmed = run_plan(tmp_path / "another-cache", *argv)
    assert "TORCH True TRANSFORMERS True" in unwarmed
    assert any(line.startswith("accelerate ") for line in _without_times(first))
    assert _without_times(first.replace("TORCH False TRANSFORMERS False", "")) == \
        _without_times(unwarmed.replace("TORCH True TRANSFORMERS True", ""))


def test_cache_warm_measures_through_the_shipped_models_list(cache: Path, capsys: pytest.CaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import core.model.warm_cache as warm

    monkeypatch.setattr(warm, "all_preset_names", lambda: ["gpt-nano"])
    assert main.main(["cache", "--warm"]) == 0
    out = capsys.readouterr().out
    assert "measured gpt-nano" in out and "warmed 1 shipped models" in out
    # each mode x micro-batch, at the model's own context: what its first plans ask for
    assert len(entries(cache)) == len(warm.WARMED_MODES) * len(warm.WARMED_MICRO_BATCHES)
    setup = TrainingSetup(micro_batch_size=2, seq_len=resolve_model("gpt-nano").default_seq_len, recompute=True)
    assert disk_cache.read_entry("graphs", graph_cache_key(resolve_model("gpt-nano"), setup.precision, True, True, 2,
                                                           setup.seq_len)) is not None
    with pytest.raises(SystemExit) as exit_info:
        main.main(["cache", "--warm", "--clear"])
    assert exit_info.value.code == 2

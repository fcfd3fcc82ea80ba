"""Project files, the app's device entries, recent files and plan exports (no Qt)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.devices.catalog import load_catalog
from core.errors import InputError
from core.model.config import GPTSize, ModelChoice
from core.planning.device_resolution import DeviceEntry
from core.planning.export import divisors, torchrun_commands
from core.planning.finetune import FineTune
from core.planning.setup import TrainingSetup
from core.project import (
    Project,
    default_devices,
    entries_from_inventory,
    last_project,
    load_project,
    merge_saved_devices,
    project_from_dict,
    project_to_dict,
    recent_projects,
    remember_project,
    save_project,
    simulated_entry,
)
from core.system.torchrun import torchrun_command

GiB = 1024**3


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "config"
    monkeypatch.setenv("ALLOT_CONFIG_DIR", str(directory))
    return directory


def host(total: int = 64 * GiB, included: bool = True) -> DeviceEntry:
    return DeviceEntry(name="cpu", kind="host", memory_total_bytes=total, budget_bytes=total // 2, included=included)


def inventory(gpus: tuple = (), memory: int = 64 * GiB) -> SimpleNamespace:
    return SimpleNamespace(gpus=gpus, host=SimpleNamespace(memory_total_bytes=memory, memory_available_bytes=memory // 2,
                                                           cpu_name="Test CPU"))


def gpu(index: int, free: int | None = 70 * GiB) -> SimpleNamespace:
    return SimpleNamespace(torch_index=index, name="NVIDIA A100-SXM4-80GB", memory_total_bytes=80 * GiB,
                           memory_free_bytes=free, catalog_name="A100-80GB", link_bandwidth_gbps=300.0,
                           peak_tflops=lambda precision: 312.0 if precision == "bf16" else 19.5)


def a_project() -> Project:
    first = simulated_entry("A100-80GB")
    second = replace(simulated_entry("A100-80GB", {first.name}), budget_bytes=30 * GiB, included=False)
    return Project(devices=(first, second, host()),
                   model=ModelChoice(source="custom", custom=GPTSize(layers=4, d_model=256, heads=4)),
                   setup=TrainingSetup(micro_batches=4, schedule="gpipe", recompute=True,
                                       finetune=FineTune("qlora", 8, 16.0, 0.05, ("c_attn", "c_fc"))),
                   solver="uniform",
                   view="graph", steps=37)


def test_a_project_round_trips_through_its_file(tmp_path: Path) -> None:
    project = a_project()
    path = save_project(project, tmp_path / "p.allot.json")
    data = json.loads(path.read_text())
    assert data["format"] == "allot-project" and data["version"] == 1
    assert [d["name"] for d in data["devices"]] == ["A100-80GB", "A100-80GB#2", "cpu"]
    assert data["devices"][1] == {"name": "A100-80GB#2", "kind": "simulated", "budget_bytes": 30 * GiB,
                                  "included": False, "catalog": "A100-80GB"}
    loaded = load_project(path)
    assert loaded.model == project.model and loaded.setup == project.setup
    assert data["setup"]["finetune"]["method"] == "qlora" and loaded.setup.finetune.lora_targets == ("c_attn", "c_fc")
    assert (loaded.solver, loaded.view, loaded.steps) == ("uniform", "graph", 37)
    assert loaded.devices[:2] == project.devices[:2]  # simulated GPUs: complete again from the catalog
    assert (loaded.devices[2].name, loaded.devices[2].budget_bytes) == ("cpu", 32 * GiB)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("data, words", [
    ([], "not an Allot project"),
    ({"format": "allot-project", "version": 1, "devices": [], "steps": 0}, "steps must be a whole number"),
    ({"format": "something-else"}, "not an Allot project"),
    ({"format": "allot-project", "version": 2, "devices": []}, "version 2"),
    ({"format": "allot-project", "version": 1, "devices": {}}, "'devices' must be a list"),
    ({"format": "allot-project", "version": 1, "devices": [{"name": "x", "kind": "tpu", "budget_bytes": 1}]},
     "'kind' must be one of"),
    ({"format": "allot-project", "version": 1, "devices": [{"name": "x", "kind": "host", "budget_bytes": 0}]},
     "'budget_bytes' must be a whole number"),
    ({"format": "allot-project", "version": 1, "devices": [
        {"name": "x", "kind": "simulated", "catalog": "L4", "budget_bytes": 100 * GiB}]}, "exceeds the L4"),
    ({"format": "allot-project", "version": 1, "devices": [
        {"name": "x", "kind": "host", "budget_bytes": 1}, {"name": "x", "kind": "host", "budget_bytes": 1}]},
     "unique"),
    ({"format": "allot-project", "version": 1, "devices": [], "model": {"source": "hub"}}, "'source' one of"),
    ({"format": "allot-project", "version": 1, "devices": [], "model": {"source": "custom",
                                                                        "custom": {"layers": -1}}}, "'layers'"),
    ({"format": "allot-project", "version": 1, "devices": [], "model": {"source": "preset", "name": "gpt-nano"},
      "setup": {"micro_batches": 0}}, "micro-batches"),
    ({"format": "allot-project", "version": 1, "devices": [], "model": {"source": "preset", "name": "gpt-nano"},
      "solver": "magic"}, "solver must be one of"),
])
def test_malformed_projects_are_one_line_errors(data: object, words: str) -> None:
    with pytest.raises(InputError, match=words.replace("(", r"\(")):
        project_from_dict(data)


def test_unreadable_and_non_json_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read project"):
        load_project(tmp_path / "missing.allot.json")
    (tmp_path / "x.json").write_text("{oops")
    with pytest.raises(InputError, match="is not JSON"):
        load_project(tmp_path / "x.json")


def test_simulated_names_are_unique_and_stable() -> None:
    first = simulated_entry("a100-80gb")
    second = simulated_entry("A100-80GB", {first.name})
    third = simulated_entry("A100-80GB", {first.name, second.name})
    assert [first.name, second.name, third.name] == ["A100-80GB", "A100-80GB#2", "A100-80GB#3"]
    assert first.memory_total_bytes == first.budget_bytes == load_catalog().find("A100-80GB").memory_bytes
    with pytest.raises(InputError, match="unknown GPU"):
        simulated_entry("Voodoo2")


def test_this_machines_devices() -> None:
    assert [(e.name, e.kind, e.included) for e in default_devices(inventory())] == [
        ("A100-80GB", "simulated", True), ("RTX4090", "simulated", True), ("cpu", "host", False)]
    entries = entries_from_inventory(inventory((gpu(0), gpu(1, free=None))))
    assert [(e.name, e.kind, e.included) for e in entries] == [
        ("cuda:0", "gpu", True), ("cuda:1", "gpu", True), ("cpu", "host", False)]
    assert entries[0].budget_bytes == 70 * GiB and entries[1].budget_bytes == 80 * GiB  # free, else all
    assert default_devices(inventory((gpu(0),)))[0].name == "cuda:0"  # real GPUs: no simulated ones


def test_saved_devices_meet_this_machine() -> None:
    saved = (replace(host(), budget_bytes=100 * GiB, included=False),
             DeviceEntry("cuda:0", "gpu", 80 * GiB, 60 * GiB), DeviceEntry("cuda:7", "gpu", 80 * GiB, 1),
             simulated_entry("L4"))
    here = entries_from_inventory(inventory((gpu(0), gpu(1))))
    merged, notes = merge_saved_devices(saved, here)
    assert [(e.name, e.budget_bytes, e.included) for e in merged] == [
        ("cpu", 64 * GiB, False), ("cuda:0", 60 * GiB, True), ("L4", saved[3].budget_bytes, True),
        ("cuda:1", 70 * GiB, False)]
    assert notes == ["cpu's budget is capped at its memory on this machine"]  # cuda:7: core.devices.stand_ins


def test_recent_projects_newest_first_and_the_last_one(tmp_path: Path, config_dir: Path) -> None:
    assert recent_projects() == [] and last_project() is None
    paths = [tmp_path / f"{i}.allot.json" for i in range(12)]
    for path in paths:
        save_project(a_project(), path)
        remember_project(path)
    remember_project(paths[3])
    recent = recent_projects()
    assert recent[0] == paths[3].resolve() and len(recent) == 10
    assert (config_dir / "recent.json").is_file()
    paths[3].unlink()
    assert last_project() == paths[11].resolve()  # the newest that still exists
    (config_dir / "recent.json").write_text("garbage")
    assert recent_projects() == []


def test_torchrun_commands_per_host() -> None:
    nodes = torchrun_commands(stages=8, nnodes=2, endpoint="node0:29500", run_dir="runs/x")
    assert [node.stages for node in nodes] == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert nodes[1].command == ("python -m torch.distributed.run --nnodes 2 --node-rank 1 --nproc-per-node 4 "
                                "--rdzv-backend static --rdzv-endpoint node0:29500 --max-restarts 0 "
                                "-m core.training.engine.pipeline_worker runs/x")
    single = torchrun_command(1, 0, 3, "127.0.0.1:29500", "runs/x")
    assert "--node-rank" not in single and single[single.index("--rdzv-backend") + 1] == "c10d"
    assert divisors(6) == [1, 2, 3, 6]
    with pytest.raises(InputError, match="choose 1, 2, 3, 6 hosts"):
        torchrun_commands(6, 4, "h:1", "r")
    with pytest.raises(InputError, match="HOST:PORT"):
        torchrun_commands(2, 2, "nohost", "r")
    with pytest.raises(InputError, match="no stages"):
        torchrun_commands(0, 1, "h:1", "r")


def test_project_dict_of_a_preset_and_a_config_label() -> None:
    data = project_to_dict(Project(devices=(), model=ModelChoice(name="llama-2-7b")))
    assert data["model"] == {"source": "preset", "name": "llama-2-7b"}
    assert ModelChoice(source="config", name="/models/mistral/config.json").label == "mistral"
    assert ModelChoice(source="config", name="/models/tiny.json").label == "tiny"

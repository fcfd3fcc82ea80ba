"""Plan to run, typed (issue 20 item 4): the app's Start and `main.py train` hand a run the same
typed devices and plan, written once into the run directory and read back typed by the job.

The app's side is what its Start does (core.training.app_request: run_devices, train_config,
start_run's preparation); the CLI's side is `main.py train` parsed and built
(cli.train_command.build_config) with the same devices typed as a user would, and the app's plan
as a --plan file. Both run directories must hold equal devices and plans, the devices named as
the Plan tab named them (core.devices.names), and no device spec or budget string.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from cli import build_parser
from cli.train_command import build_config
from core.model.config import ModelChoice
from core.planning.front_door import DeviceEntry, plan_json, plan_model
from core.planning.plan import Plan
from core.planning.problem import Device
from core.planning.setup import TrainingSetup
from core.project import simulated_entry
from core.system.durable import read_json
from core.training.app_request import run_devices, train_config
from core.training.engine.context import RunContext
from core.training.run_dir import RunPaths
from core.training.runner import prepare_new_run
from tests.core.training.support import write_corpus

GIB = 1024**3
SETUP = TrainingSetup(micro_batch_size=2, seq_len=32, micro_batches=4)  # planned bf16, as the app's default
BUDGET_TEXT = re.compile(r":\s*[\d.]+\s*[KMGT]?i?B\b")  # a spec term's budget: "A100-80GB:85899345920B", "cpu:2GiB"


def two_a100s(first_budget: int = 25 * GIB, second_budget: int = 25 * GIB,
              first_included: bool = True) -> tuple[tuple[DeviceEntry, ...], Plan]:
    """Two simulated A100s as the app names them (A100-80GB and A100-80GB#2) and their plan of gpt-nano."""
    first = simulated_entry("A100-80GB")
    second = simulated_entry("A100-80GB", {first.name})
    entries = (replace(first, budget_bytes=first_budget, included=first_included),
               replace(second, budget_bytes=second_budget))
    planned = plan_model(ModelChoice.named("gpt-nano"), SETUP, entries).plan
    assert planned.feasible
    return entries, planned


def app_run(root: Path, corpus: Path, entries: tuple, planned: Plan) -> Path:
    devices = run_devices(entries, planned, SETUP.precision)
    config = train_config(ModelChoice.named("gpt-nano"), SETUP, devices, 20, "pipeline", str(corpus))
    prepare_new_run(config, root / "app", planned, emit=lambda _: None)
    return root / "app"


def cli_run(root: Path, corpus: Path, entries: tuple, planned: Plan) -> Path:
    (root / "plan.json").write_text(plan_json(planned))
    spec = f"{len(entries)}xA100-80GB:{entries[0].budget_bytes // GIB}GiB"  # alike: one NVLink box, as the app's
    args = build_parser().parse_args(
        ["train", "--model", "gpt-nano", "--devices", spec, "--plan", str(root / "plan.json"),
         "--micro-batch-size", "2", "--seq-len", "32", "--micro-batches", "4", "--steps", "20",
         "--data", str(corpus), "--run-dir", str(root / "cli")])
    config, run_dir = build_config(args)
    prepare_new_run(config, run_dir, Plan.from_dict(json.loads(plan_json(planned))), emit=lambda _: None)
    return run_dir


def stored(run_dir: Path) -> tuple[dict, dict]:
    paths = RunPaths(run_dir)
    plan = read_json(paths.plan, "plan")
    plan.pop("solve_time_s", None)
    return read_json(paths.config, "run config"), plan


def strings_in(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in strings_in(item)]
    if isinstance(value, list):
        return [text for item in value for text in strings_in(item)]
    return []


def test_the_app_and_the_cli_write_the_same_typed_devices_and_plan(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", lines=400)
    entries, planned = two_a100s()
    assert len(planned.stages) == 2
    (app_config, app_plan), (cli_config, cli_plan) = (stored(app_run(tmp_path, corpus, entries, planned)),
                                                      stored(cli_run(tmp_path, corpus, entries, planned)))
    assert app_config["config"]["devices"] == cli_config["config"]["devices"]
    assert app_plan == cli_plan
    assert app_config["config"]["setup"] == cli_config["config"]["setup"]
    assert "devices" not in app_config  # serialised once: inside the config
    for config in (app_config, cli_config):
        assert not [text for text in strings_in(config["config"]) if BUDGET_TEXT.search(text)]


def test_a_device_named_twice_keeps_its_number_through_to_the_job(tmp_path):
    """The second A100 alone (the first ticked off): the run calls it A100-80GB#2, as the Plan tab did."""
    corpus = write_corpus(tmp_path / "corpus.txt", lines=400)
    entries, planned = two_a100s(first_included=False)
    assert {name for stage in planned.stages for name in stage.devices} == {"A100-80GB#2"}
    run = RunContext.load(app_run(tmp_path, corpus, entries, planned))  # what the job reads
    assert all(isinstance(device, Device) for device in run.config.devices)
    assert [(d.name, d.budget_bytes) for d in run.config.devices] == [("A100-80GB#2", 25 * GIB)]
    assert [stage.devices for stage in run.plan.stages] == [stage.devices for stage in planned.stages]


def test_a_run_prepared_before_the_devices_were_typed_still_reads(tmp_path):
    """Format 1 kept a spec string in the config and the resolved devices beside it."""
    corpus = write_corpus(tmp_path / "corpus.txt", lines=400)
    entries, planned = two_a100s(20 * GIB, 30 * GIB)
    paths = RunPaths(app_run(tmp_path, corpus, entries, planned))
    record = read_json(paths.config, "run config")
    devices = record["config"]["devices"]
    record["format"], record["config"]["devices"] = 1, "A100-80GB#2:32212254720B,A100-80GB:21474836480B"
    record["devices"] = [{"name": d["name"], "budget_bytes": d["memory_bytes"], "tflops": d["tflops"],
                          "bandwidth_gbps": d["bandwidth_gbps"], "kind": d["kind"],
                          "memory_total_bytes": d["memory_total_bytes"]} for d in devices]
    paths.config.write_text(json.dumps(record))
    run = RunContext.load(paths.root)
    assert [(d.name, d.budget_bytes) for d in run.config.devices] == [("A100-80GB", 20 * GIB),
                                                                      ("A100-80GB#2", 30 * GIB)]

"""The app's Start: its devices typed, in the app's names, and the run's config."""

import json
from dataclasses import replace

import pytest

from core.errors import InputError
from core.model.config import GPTSize, ModelChoice
from core.planning.device_resolution import DeviceEntry, resolve_devices
from core.planning.plan import Plan, StageCost
from core.planning.problem import Device
from core.planning.setup import TrainingSetup
from core.project import simulated_entry
from core.training.app_request import (
    check_run_name,
    default_run_name,
    run_devices,
    train_config,
    why_not_trainable,
)
from core.training.new_run import RunDevices
from core.training.plan_file import plan_stages
from core.training.runner import layer_names, trainable_model

GIB = 1024**3
HOST_DEVICES = RunDevices("fp32", (Device(name="cpu", budget_bytes=2 * GIB, tflops=0.1, bandwidth_gbps=10.0, kind="cpu"),))
NANO_LAYERS = ["embed", "h.0", "h.1", "h.2", "h.3", "h.4", "ln_f", "lm_head"]


def stage(device, layers):
    return StageCost(device=device, layers=tuple(layers), layer_indices=tuple(range(len(layers))), compute_s=0.01,
                     comm_s=0.001, inflight_micro_batches=1, params=10, weight_bytes=40.0, grad_bytes=40.0,
                     optimizer_bytes=80.0, activation_bytes=100.0, budget_bytes=GIB)


def plan(*stages):
    return Plan(status="optimal", solver="exact", stages=tuple(stage(d, layers) for d, layers in stages),
                objective_s=0.05, lower_bound_s=0.04, micro_batches=2)


def host(budget=2 * GIB, included=True):
    return DeviceEntry(name="cpu", kind="host", memory_total_bytes=8 * GIB, budget_bytes=budget, included=included)


def gpu(index, budget=10 * GIB):
    return DeviceEntry(name=f"cuda:{index}", kind="gpu", memory_total_bytes=80 * GIB, budget_bytes=budget,
                       catalog_name="A100-80GB", peak_tflops_fp32=19.5, peak_tflops_bf16=312.0)


def simulated(catalog, taken=(), budget=None):
    entry = simulated_entry(catalog, set(taken))
    return entry if budget is None else replace(entry, budget_bytes=budget)


def names_and_budgets(answer):
    return [(device.name, device.budget_bytes) for device in answer.devices]


def test_simulated_duplicates_keep_the_apps_names_in_the_run():
    first = simulated("A100-80GB", budget=10 * GIB)
    second = simulated("A100-80GB", {first.name}, budget=20 * GIB)
    assert (first.name, second.name) == ("A100-80GB", "A100-80GB#2")
    # the plan runs the second A100 first: stage order is not the device order
    answer = run_devices([first, second], plan(("A100-80GB#2", NANO_LAYERS[:4]), ("A100-80GB", NANO_LAYERS[4:])),
                         "fp32")
    assert names_and_budgets(answer) == [("A100-80GB", 10 * GIB), ("A100-80GB#2", 20 * GIB)]
    assert all(isinstance(device, Device) for device in answer.devices)


def test_a_plan_on_later_copies_only_still_names_them_as_the_app_does():
    """Issue 19 item 4: the Plan tab said H100-SXM#2 where the run said H100-SXM#1."""
    copies = []
    for budget in (10, 20, 30):
        copies.append(simulated("H100-SXM", {c.name for c in copies}, budget=budget * GIB))
    given = plan(("H100-SXM#3", NANO_LAYERS[:4]), ("H100-SXM#2", NANO_LAYERS[4:]))
    answer = run_devices(copies, given, "fp32")
    assert names_and_budgets(answer) == [("H100-SXM#2", 20 * GIB), ("H100-SXM#3", 30 * GIB)]
    stages = plan_stages(given, NANO_LAYERS, answer.names)
    assert [devices for devices, _ in stages] == [("H100-SXM#3",), ("H100-SXM#2",)]


def test_the_devices_are_the_planners_at_the_run_precision(tmp_path):
    """The same resolution as planning (three alike A100s share their NVLink box), at fp32: the
    run's precision on simulated GPUs, where the app planned bf16."""
    entries = []
    for _ in range(3):
        entries.append(simulated("A100-80GB", {e.name for e in entries}))
    given = plan((entries[0].name, NANO_LAYERS[:4]), (entries[2].name, NANO_LAYERS[4:]))
    answer = run_devices(entries, given, "bf16")
    assert answer.precision == "fp32"
    planned = {d.name: d for d in resolve_devices(entries, "fp32")}
    assert answer.devices == (planned["A100-80GB"], planned["A100-80GB#3"])


def test_a_plan_on_a_subset_names_only_the_devices_it_uses(tmp_path):
    a100 = simulated("A100-80GB")
    rtx = simulated("RTX4090", {a100.name})
    h100 = simulated("H100-SXM", {a100.name, rtx.name})
    entries = [a100, rtx, h100, host()]
    given = plan(("H100-SXM", NANO_LAYERS[:5]), ("A100-80GB", NANO_LAYERS[5:]))
    answer = run_devices(entries, given, "fp32", host_peak_tflops=0.1)
    assert names_and_budgets(answer) == [("A100-80GB", a100.budget_bytes), ("H100-SXM", h100.budget_bytes)]
    # what the runner does with them: check the plan against their names
    stages = plan_stages(given, NANO_LAYERS, answer.names)
    assert stages == [(("H100-SXM",), tuple(NANO_LAYERS[:5])), (("A100-80GB",), tuple(NANO_LAYERS[5:]))]


def test_the_host_and_discovered_gpus_keep_their_names_and_exact_budgets():
    entries = [gpu(0, 10 * GIB + 123), gpu(1), host(3 * GIB + 1)]
    answer = run_devices(entries, plan(("cuda:1", NANO_LAYERS[:3]), ("cuda:0", NANO_LAYERS[3:6]),
                                       ("cpu", NANO_LAYERS[6:])), "fp32", host_peak_tflops=0.1)
    assert names_and_budgets(answer) == [("cuda:0", 10 * GIB + 123), ("cuda:1", 10 * GIB), ("cpu", 3 * GIB + 1)]
    host_only = run_devices([host(2 * GIB)], plan(("cpu", NANO_LAYERS)), "fp32", host_peak_tflops=0.1)
    assert names_and_budgets(host_only) == [("cpu", 2 * GIB)]


def test_a_stale_or_infeasible_plan_is_refused_in_one_line():
    with pytest.raises(InputError, match="no longer in the device list"):
        run_devices([host()], plan(("RTX4090", NANO_LAYERS)), "fp32", 0.1)
    with pytest.raises(InputError, match="no longer in the device list"):  # ticked off since it was planned
        run_devices([host(included=False)], plan(("cpu", NANO_LAYERS)), "fp32", 0.1)
    infeasible = Plan(status="infeasible", solver="exact", stages=(), objective_s=None, lower_bound_s=0.1,
                      micro_batches=2, reason="cpu is 3 GiB short")
    with pytest.raises(InputError, match="cpu is 3 GiB short"):
        run_devices([host()], infeasible, "fp32", 0.1)


def test_gpt_and_hf_models_in_train_mode_can_be_trained_others_say_why(tmp_path):
    train = TrainingSetup()
    assert why_not_trainable(ModelChoice(name="gpt-nano"), train) is None
    assert why_not_trainable(ModelChoice(source="custom", custom=GPTSize(layers=2)), train) is None
    assert why_not_trainable(ModelChoice(name="llama-2-7b"), train) is None
    assert why_not_trainable(ModelChoice(name="hf/gpt2-xl"), train) is None
    assert why_not_trainable(ModelChoice(name="mixtral-8x7b"), train) is None
    assert "cannot read" in why_not_trainable(ModelChoice(source="config", name="/x/config.json"), train)
    (tmp_path / "bart.json").write_text(json.dumps({"model_type": "bart"}))
    reason = why_not_trainable(ModelChoice(source="config", name=str(tmp_path / "bart.json")), train)
    assert "'bart' is an encoder model" in reason  # resources/hf_coverage.json's reason, no torch needed
    (tmp_path / "neox.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    assert why_not_trainable(ModelChoice(source="config", name=str(tmp_path / "neox.json")), train) is None
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert "has no weights" in why_not_trainable(ModelChoice(source="config", name=str(tmp_path / "folder")), train)
    assert "train mode" in why_not_trainable(ModelChoice(name="gpt-nano"), TrainingSetup(mode="infer"))
    with pytest.raises(InputError, match="encoder model"):
        train_config(ModelChoice(source="config", name=str(tmp_path / "bart.json")), train, HOST_DEVICES, 10)


def test_the_config_carries_the_model_setup_devices_and_intervals():
    setup = TrainingSetup(precision="fp32", micro_batch_size=2, seq_len=64, micro_batches=2)
    config = train_config(ModelChoice(name="gpt-nano"), setup, HOST_DEVICES, 400, "local", data="corpus.txt")
    assert (config.model, config.custom, config.devices, config.engine, config.steps, config.data) == (
        "gpt-nano", None, HOST_DEVICES.devices, "local", 400, "corpus.txt")
    assert config.setup == setup
    assert (config.eval_interval, config.checkpoint_interval, config.log_interval) == (40, 50, 10)
    custom = train_config(ModelChoice(source="custom", custom=GPTSize(layers=2, d_model=64, heads=4, vocab=256,
                                                                          seq=64)), setup, HOST_DEVICES, 10)
    assert custom.model == "custom" and custom.custom.layers == 2
    name, gpt = trainable_model(custom, 256)
    assert layer_names(gpt) == ["embed", "h.0", "h.1", "ln_f", "lm_head"] and name.startswith("gpt-custom-2L")
    assert train_config(ModelChoice(name="gpt-nano"), setup, HOST_DEVICES, 10, eval_interval=3).eval_interval == 3


def test_run_names():
    name = default_run_name(ModelChoice(name="gpt-nano"), now=0.0)
    assert name.startswith("gpt-nano-19") or name.startswith("gpt-nano-1970")
    assert default_run_name(ModelChoice(source="custom", custom=GPTSize(layers=3, d_model=96)), 0.0) \
        .startswith("custom-3L-96d-")
    assert check_run_name("  my run ") == "my run"
    for bad in ("", "a/b", "..", ".hidden"):
        with pytest.raises(InputError):
            check_run_name(bad)


def test_a_data_parallel_plan_runs_on_every_device_of_its_groups(tmp_path):
    entries = []
    for _ in range(4):
        entries.append(simulated("A100-80GB", {e.name for e in entries}))
    names = [e.name for e in entries]  # A100-80GB, A100-80GB#2, #3, #4: the run's names too
    stages = tuple(replace(stage(group[0], layers), devices=group)
                   for group, layers in (((names[2], names[0]), NANO_LAYERS[:4]),
                                         ((names[3], names[1]), NANO_LAYERS[4:])))
    hybrid = replace(plan(), stages=stages, data_parallel=2, zero=3)
    answer = run_devices(entries, hybrid, "fp32")
    assert answer.names == tuple(names)  # no device of a replica is left out
    stages_read = plan_stages(hybrid, NANO_LAYERS, answer.names)
    assert [group for group, _ in stages_read] == [("A100-80GB#3", "A100-80GB"), ("A100-80GB#4", "A100-80GB#2")]

"""Profiles: the whole model timed as one block and each layer on its own, and the planner calibrated
with the block (docs/design.md, "Profiles")."""

import json
from dataclasses import replace

import pytest

from core.errors import InputError
from core.model.presets import GPT_PRESETS
from core.planning.problem import Device
from core.planning.setup import TrainingSetup
from core.training.engine.profile import (
    DeviceProfile,
    LayerTiming,
    Profile,
    apply_profile,
    load_profile,
    measure_profile,
    save_profile,
)
from main import main

SETUP = TrainingSetup(precision="fp32", micro_batch_size=2, seq_len=32, micro_batches=2)
CPU = Device(name="cpu", budget_bytes=1 << 30, tflops=0.5, bandwidth_gbps=10.0, kind="cpu")


def cpus(count):
    return tuple(replace(CPU, name=f"cpu#{i}") for i in range(count))


@pytest.fixture(scope="module")
def profile():
    return measure_profile("gpt-nano", GPT_PRESETS["gpt-nano"], SETUP, cpus(2), repeats=2, emit=lambda _: None)


@pytest.mark.slow  # the profile fixture: a measuring process per stage
def test_every_layer_is_timed_on_the_host(profile):
    (host,) = profile.devices
    assert host.name == "cpu" and host.shares == 2 and host.threads >= 1
    assert [layer.name for layer in host.layers] == ["embed", "h.0", "h.1", "h.2", "h.3", "h.4", "ln_f", "lm_head"]
    assert all(layer.fwd_bwd_s > 0 for layer in host.layers)
    # each block's weight backward timed apart (its backward less its input backward): a part of it
    blocks = [layer for layer in host.layers if layer.name.startswith("h.")]
    assert all(0 < layer.weight_bwd_s < layer.fwd_bwd_s for layer in blocks)
    assert host.total_s == pytest.approx(sum(layer.fwd_bwd_s for layer in host.layers))
    assert host.block_s is not None and host.block_s > 0
    work = 3 * sum(layer.flops for layer in host.layers)  # k = 3: forward + backward
    assert host.effective_tflops == pytest.approx(work / host.block_s / 1e12)  # the block, not the sum
    assert host.per_call_overhead_s == pytest.approx((host.total_s - host.block_s) / 7)


@pytest.mark.slow  # the profile fixture: a measuring process per stage
def test_a_profile_round_trips_and_bad_files_are_input_errors(tmp_path, profile):
    save_profile(profile, tmp_path / "p.json")
    assert load_profile(tmp_path / "p.json") == profile
    written = json.loads((tmp_path / "p.json").read_text())["devices"][0]
    assert written["per_call_overhead_s"] == profile.devices[0].per_call_overhead_s  # derived, for the reader
    (tmp_path / "bad.json").write_text('{"format": 1}')
    with pytest.raises(InputError, match="not an Allot profile"):
        load_profile(tmp_path / "bad.json")


@pytest.mark.slow  # the profile fixture: a measuring process per stage
def test_apply_replaces_cpu_speed_and_accounts_for_sharing(profile):
    measured = profile.devices[0].effective_tflops
    assert [d.tflops for d in apply_profile(cpus(2), profile)] == pytest.approx([measured, measured])
    assert [d.tflops for d in apply_profile(cpus(4), profile)] == pytest.approx([measured / 2] * 4)
    simulated = Device(name="A100-80GB", budget_bytes=1 << 30, tflops=200.0, bandwidth_gbps=25.0, kind="A100-80GB")
    assert apply_profile((simulated,), profile) == (simulated,)


@pytest.mark.slow  # the profile fixture: a measuring process per stage
def test_a_calibrated_plan_predicts_the_measured_time(profile):
    from core.model.model_spec import ModelSpec
    from core.planning.front_door import build_problem
    from core.planning.solvers import solve

    (device,) = apply_profile((replace(CPU, name="cpu"),), replace(profile, devices=(
        replace(profile.devices[0], shares=1),)))
    problem = build_problem(ModelSpec("gpt-nano", GPT_PRESETS["gpt-nano"]), SETUP, (device,))
    plan = solve(problem, "exact")
    assert plan.stages[0].compute_s == pytest.approx(profile.devices[0].block_s)  # one stage: the block


@pytest.mark.slow  # a measuring process per stage
def test_the_profile_command_writes_a_profile(tmp_path, capsys):
    out = tmp_path / "nano.json"
    code = main(["profile", "--model", "gpt-nano", "--devices", "2xcpu", "--seq-len", "32",
                 "--micro-batch-size", "2", "--repeats", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert load_profile(out).devices[0].name == "cpu"
    assert "GFLOP/s effective" in capsys.readouterr().out


def test_an_hf_model_is_profiled_layer_by_layer_and_calibrates_its_plan(tmp_path):
    from core.model.hf_source import HFModelSource
    from core.model.model_spec import ModelSpec
    from core.planning.front_door import build_problem
    from core.planning.solvers import solve
    from tests.core.training.engine.hf_support import tiny_llama_config

    source = HFModelSource.of(tiny_llama_config(layers=2).to_dict())
    measured = measure_profile("tiny-llama", source, SETUP, (CPU,), repeats=1, emit=lambda _: None)
    (host,) = measured.devices
    assert [layer.name for layer in host.layers] == ["model.embed_tokens", "model.layers.0", "model.layers.1",
                                                     "model.norm", "lm_head"]
    assert all(layer.fwd_bwd_s > 0 for layer in host.layers)
    save_profile(measured, tmp_path / "p.json")
    assert load_profile(tmp_path / "p.json").hf == source.config
    (device,) = apply_profile((CPU,), measured)
    problem = build_problem(ModelSpec("tiny-llama", hf_config_json=source.config_json), SETUP, (device,))
    assert solve(problem, "exact").stages[0].compute_s == pytest.approx(host.block_s)


def test_the_per_call_overhead_is_what_the_layers_add_over_the_block():
    layers = tuple(LayerTiming(f"h.{i}", 1e9, 0.030) for i in range(4))  # 4 x 30 ms on their own
    device = DeviceProfile(name="cuda:0", kind="H200", torch_device="cuda:0", shares=1, threads=1, work_factor=3,
                           effective_tflops=1.0, total_s=0.120, layers=layers, block_s=0.105)
    assert device.per_call_overhead_s == pytest.approx(0.005)  # 15 ms over 3 boundaries the block does not pay
    old = replace(device, block_s=None)  # a profile written before blocks were timed
    assert old.per_call_overhead_s is None
    record = Profile("m", {}, {}, (old,)).to_dict()["devices"][0]
    assert Profile.from_dict({"devices": [record], "model": "m", "gpt": {}, "setup": {}}).devices == (old,)


def test_the_profile_gives_the_plan_a_time_per_layer_per_kind():
    from core.planning.problem import Layer, Problem, Setup
    from core.planning.solvers import solve
    from core.training.engine.profile import profile_layer_times

    layers = tuple(LayerTiming(f"h.{i}", 1e9, t, t / 4) for i, t in enumerate((0.010, 0.020, 0.030, 0.060)))  # 120 ms
    a100 = DeviceProfile(name="cuda:0", kind="A100-40GB", torch_device="cuda:0", shares=1, threads=1, work_factor=3,
                         effective_tflops=1.0, total_s=0.120, layers=layers, block_s=0.096)
    other_model = replace(a100, name="cuda:1", kind="V100-16GB", layers=layers[:2])
    profile = Profile("m", {}, {"micro_batch_size": 2, "seq_len": 8}, (a100, other_model))
    problem = Problem(
        tuple(Layer(f"h.{i}", params=1, flops=1e9, activation_bytes=0, output_bytes=0) for i in range(4)),
        (Device("cuda:0", 1 << 30, 1.0, 10.0, kind="A100-40GB"), Device("cuda:1", 1 << 30, 1.0, 10.0,
                                                                       kind="V100-16GB")),
        Setup(micro_batches=1, tokens_per_micro_batch=16))
    (table,) = profile_layer_times(problem, profile)  # the V100 timed other layers: its speed prices it
    # forward = fwd_bwd / k, scaled by block / sum (96 / 120 = 0.8): 10 ms -> 10 x 0.8 / 3 ms
    assert table.kind == "A100-40GB"
    assert table.forward_s == pytest.approx([0.010 * 0.8 / 3, 0.020 * 0.8 / 3, 0.030 * 0.8 / 3, 0.060 * 0.8 / 3])
    # the weight backward (a quarter of each layer's fwd_bwd here) scaled alike, not divided by k
    assert table.weight_backward_s == pytest.approx([0.010 * 0.8 / 4, 0.020 * 0.8 / 4, 0.030 * 0.8 / 4, 0.060 * 0.8 / 4])
    timed = replace(problem, devices=problem.devices[:1], layer_times=(table,))
    assert solve(timed, "exact").stages[0].compute_s == pytest.approx(0.096)  # the block, as one stage
    other_tokens = replace(problem, setup=Setup(micro_batches=1, tokens_per_micro_batch=32))
    assert profile_layer_times(other_tokens, profile) == ()


def test_plan_with_a_profile_prices_each_layer_with_its_measured_time(tmp_path, capsys):
    names = ["embed", "h.0", "h.1", "h.2", "h.3", "h.4", "ln_f", "lm_head"]
    seconds = {"embed": 0.001, "ln_f": 0.001, "lm_head": 0.050, **{f"h.{i}": 0.010 for i in range(5)}}  # 102 ms
    host = DeviceProfile(name="cpu", kind="cpu", torch_device="cpu", shares=2, threads=1, work_factor=3,
                         effective_tflops=0.01, total_s=0.102, block_s=0.0816,
                         layers=tuple(LayerTiming(name, 1e6, seconds[name]) for name in names))
    save_profile(Profile("gpt-nano", {}, {"micro_batch_size": 1, "seq_len": 64}, (host,)), tmp_path / "p.json")
    assert main(["plan", "--model", "gpt-nano", "--devices", "2xcpu:1GiB", "--seq", "64", "--micro-batch", "1",
                 "--schedule", "1f1b", "--profile", str(tmp_path / "p.json"), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    # each stage: k x its layers' forward seconds, fwd_bwd / k x block / sum (0.8): 0.8 x its layers' times
    for stage in plan["stages"]:
        assert stage["compute_s"] == pytest.approx(0.8 * sum(seconds[name] for name in stage["layers"]))

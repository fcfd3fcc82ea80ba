"""Baselines: accelerate's rule (checked against the real accelerate) and DeepSpeed's partitions."""

import logging

import accelerate
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.planning.baselines import (
    greedy_assignment,
    partition_balanced,
    partition_uniform,
    solve_greedy,
    solve_parameters,
    solve_uniform,
)
from core.planning.problem import Device, Layer, Problem, Setup
from tests.core.planning.problems import device, layer, problem, stage_map


def test_greedy_fills_the_first_device_keeping_room_for_the_largest_layer():
    # Weights at 1 byte/param: a 100, b 200, c 200, d 100; budgets {g0: 500, g1: 500}.
    # a: 100 <= 500 - 200 (largest left: b or c); b: 300 <= 500 - 200; c: 500 > 500 - 100,
    # so c and d go to g1.
    layers = [layer("a", 100), layer("b", 200), layer("c", 200), layer("d", 100)]
    p = problem(layers, [device("g0", 500), device("g1", 500)], mode="infer", bytes_per_param=1)
    plan = solve_greedy(p)
    assert stage_map(plan) == {"g0": ["a", "b"], "g1": ["c", "d"]}


def test_greedy_ignores_training_state_and_runs_out_of_memory():
    # 16 bytes/param in training, but accelerate sizes weights at 2: everything "fits" g0.
    layers = [layer("a", 100), layer("b", 100)]
    p = problem(layers, [device("g0", 1000), device("g1", 1000)], mode="train", bytes_per_param=16,
                weight_bytes_per_param=2, grad_bytes_per_param=2, optimizer_bytes_per_param=12)
    plan = solve_greedy(p)
    assert plan.status == "infeasible"
    assert "short by 2.15 KiB (2200 bytes)" in plan.reason  # 3200 bytes on a 1000-byte budget


def test_greedy_reports_offload_when_weights_do_not_fit():
    p = problem([layer("a", 300), layer("b", 300)], [device("g0", 400)], mode="infer", bytes_per_param=1)
    plan = solve_greedy(p)
    assert plan.status == "infeasible" and "offload" in plan.reason


def test_deepspeed_uniform_gives_the_first_parts_the_remainder():
    assert partition_uniform(10, 3) == [0, 4, 7, 10]
    assert partition_uniform(2, 3) == [0, 1, 2, 2]
    layers = [layer(str(i), 1, flops=1e12) for i in range(5)]
    plan = solve_uniform(problem(layers, [device("g0", 100), device("g1", 100)], mode="infer", bytes_per_param=1))
    assert [len(s.layers) for s in plan.stages] == [3, 2]


def test_deepspeed_parameters_balances_parameter_counts():
    # [1, 1, 1, 1 | 10]: parts 4 and 10 differ by 6, the least of all splits.
    assert partition_balanced([1, 1, 1, 1, 10], 2) == [0, 4, 5]
    layers = [layer(str(i), p) for i, p in enumerate([1, 1, 1, 1, 10])]
    plan = solve_parameters(problem(layers, [device("g0", 100), device("g1", 100)], mode="infer",
                                    bytes_per_param=1))
    assert [s.layers for s in plan.stages] == [("0", "1", "2", "3"), ("4",)]


# --- accelerate's rule against the real accelerate -------------------------------


class Leaf(nn.Module):
    def __init__(self, numel: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(numel, device="meta"))


class Block(nn.Module):
    def __init__(self, numel: int):
        super().__init__()
        self.inner = Leaf(numel)  # a child, so only no_split keeps accelerate from splitting it


class Chain(nn.Module):
    def __init__(self, embed: int, blocks: list[int], norm: int, tie: bool):
        super().__init__()
        self.embed = Leaf(embed)
        self.blocks = nn.ModuleList(Block(n) for n in blocks)
        self.norm = Leaf(norm)
        self.head = Leaf(embed)
        if tie:
            self.head.weight = self.embed.weight


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    embed=st.integers(1, 60), blocks=st.lists(st.integers(1, 80), min_size=1, max_size=6),
    norm=st.integers(1, 10), tie=st.booleans(),
    budgets=st.lists(st.integers(50, 900), min_size=1, max_size=4),
)
def test_greedy_places_layers_where_real_accelerate_does(embed, blocks, norm, tie, budgets):
    model = Chain(embed, blocks, norm, tie)
    logging.getLogger("accelerate.utils.modeling").setLevel(logging.ERROR)
    real = accelerate.infer_auto_device_map(model, max_memory=dict(enumerate(budgets)),
                                            no_split_module_classes=["Block"], dtype=torch.float32)
    names = ["embed", *(f"blocks.{i}" for i in range(len(blocks))), "norm", "head"]
    counts = [embed, *blocks, norm, embed]
    layers = tuple(Layer(n, c, 0.0, 0, 0, tied_group="w" if tie and n in ("embed", "head") else None,
                         tied_params=embed if tie and n in ("embed", "head") else 0)
                   for n, c in zip(names, counts))
    p = Problem(layers, tuple(Device(f"g{i}", b, 1.0, 1.0) for i, b in enumerate(budgets)),
                Setup(mode="infer", bytes_per_param=4.0, weight_bytes_per_param=4.0))
    from core.planning.accelerate_baseline import _device_of
    from core.planning.baselines import accelerate_sizes

    ours = greedy_assignment(accelerate_sizes(p), budgets, p)
    theirs = [_device_of(n, real) for n in names]
    if isinstance(ours, str):  # we say it does not fit: accelerate offloads something
        assert any(not isinstance(d, int) for d in theirs)
    else:
        assert ours == theirs


def test_a_placing_process_that_fails_leaves_the_placement_to_this_one(tmp_path, monkeypatch):
    """accelerate's column placed in a second process (core.planning.accelerate_baseline): where that
    process writes nothing, the plan places here, the same as with no second process at all."""
    import core.planning.accelerate_baseline as placing
    from core.model.model_spec import resolve_model
    from core.planning.device_resolution import resolve_devices
    from core.planning.front_door import build_problem
    from core.planning.setup import TrainingSetup
    from core.system import disk_cache

    monkeypatch.setenv("ALLOT_CACHE_DIR", str(tmp_path))
    spec = resolve_model("gpt-nano")
    setup = TrainingSetup(seq_len=64, precision="fp32")
    problem = build_problem(spec, setup, resolve_devices("A10:2MiB,A10:2MiB,A10:2MiB", setup.precision))
    with disk_cache.bypassed():
        expected = placing.solve_accelerate(problem, spec)
    monkeypatch.setattr(placing, "_torch_imported", lambda: False)  # as in a plan read from the cache
    monkeypatch.setattr(placing, "_PLACING_PROCESS", ("-c", "raise SystemExit(3)"))
    monkeypatch.setattr(placing, "_ASKED", set())
    placing.place_in_background(problem, spec)
    assert len(placing._IN_BACKGROUND) == 1
    plan = placing.solve_accelerate(problem, spec)
    assert not placing._IN_BACKGROUND
    assert [(s.device, s.layers) for s in plan.stages] == [(s.device, s.layers) for s in expected.stages]
    assert len({s.device for s in plan.stages}) == 3  # the budgets split it (an OOM plan, priced stage by stage)
    assert len(list((tmp_path / "accelerate").glob("*.json"))) == 1  # written here, once
    placing.place_in_background(problem, spec)  # asked before: nothing starts
    placing._ASKED.clear()
    placing.place_in_background(problem, spec)  # cached now: nothing starts
    assert not placing._IN_BACKGROUND

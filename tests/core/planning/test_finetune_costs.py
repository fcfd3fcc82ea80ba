"""LoRA and QLoRA costs (docs/design.md, "Fine-tuning"): per-layer terms worked out by hand on the
built-in GPT, and hand-made problems where each term decides the plan."""

import math
from dataclasses import replace

import pytest

from core.errors import InputError
from core.model.graph import build_layer_graph, graph_layers
from core.model.model_spec import resolve_model
from core.planning.costs import evaluate_placement
from core.planning.exact import solve_exact
from core.planning.finetune import FineTune
from core.planning.finetune_costs import (
    DEQUANT_FLOPS_PER_WEIGHT,
    QLORA_BYTES_PER_WEIGHT,
    default_targets,
    finetune_layers,
)
from core.planning.problem import Problem, Setup
from core.planning.setup import TrainingSetup
from core.planning.solvers import compare, solve, solver_label
from tests.core.planning.problems import device, layer

# gpt-nano: d = 128; a block holds attn.c_attn 128x384, attn.c_proj 128x128, mlp.c_fc 128x512,
# mlp.c_proj 512x128 (196,608 linear weights) and norms and biases (1,664 params): 198,272 in all.
BLOCK_LINEAR_WEIGHTS = 128 * 384 + 128 * 128 + 128 * 512 + 512 * 128
BLOCK_PARAMS = 198_272
TOKENS = 2 * 64


def _layers(method: str, **setup: object) -> tuple[dict, TrainingSetup]:
    options = {"micro_batch_size": 2, "seq_len": 64, "precision": "bf16", **setup}
    finetune = FineTune(method=method, lora_rank=4, **options.pop("finetune", {}))  # type: ignore[arg-type]
    training = TrainingSetup(finetune=finetune, **options)  # type: ignore[arg-type]
    graph = build_layer_graph(resolve_model("gpt-nano"), training)
    return {lay.name: lay for lay in finetune_layers(graph, training, graph_layers(graph))}, training


def test_the_default_targets_are_the_block_projections():
    graph = build_layer_graph(resolve_model("gpt-nano"), TrainingSetup(micro_batch_size=2, seq_len=64))
    assert default_targets(graph) == ("c_attn", "c_proj", "c_fc")


def test_full_fine_tuning_leaves_the_layers_as_measured():
    layers, training = _layers("full")
    graph = build_layer_graph(resolve_model("gpt-nano"), training)
    assert tuple(layers.values()) == graph_layers(graph)


def test_lora_block_costs_by_hand():
    layers, _ = _layers("lora")
    full, _ = _layers("full")
    block, base = layers["h.0"], full["h.0"]
    adapters = 4 * ((128 + 384) + (128 + 128) + (128 + 512) + (512 + 128))  # r x (d_in + d_out) per target
    assert block.params == adapters == 8192
    assert block.frozen_bytes == 4 * BLOCK_PARAMS  # every base weight frozen, fp32 under the engines' bf16 autocast
    assert block.scratch_bytes == 0
    adapter_flops = 2 * TOKENS * adapters
    assert block.flops == base.flops + adapter_flops
    # the frozen base: forward + input-gradient backward (2x); the adapters: forward + full backward (3x)
    assert block.work_flops == pytest.approx(2 * base.flops + 3 * adapter_flops)
    assert block.transient_bytes > 0  # the working memory is the adapted model's, as measured


@pytest.mark.parametrize(("precision", "finetune"), [
    ("fp32", {}), ("bf16", {}), ("fp32", {"lora_targets": ("c_attn",), "lora_dropout": 0.1})])
def test_adapted_activations_are_what_the_cpu_saves(precision, finetune):
    """The graph's activations under LoRA (measured on meta with PEFT's adapters on a frozen base)
    are what the same model saves for backward on the CPU, layer by layer."""
    import torch

    from core.model.gpt import GPT
    from core.training.engine.adapters import apply_finetune

    layers, training = _layers("lora", precision=precision, finetune=finetune)
    torch.manual_seed(0)
    model = apply_finetune(GPT(resolve_model("gpt-nano").gpt), training.finetune, seed=0)
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[str, dict[int, int]] = {name: {} for name, _ in model.layers()}
    current = [""]

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage._cdata not in params:
            saved[current[0]][storage._cdata] = storage.nbytes()
        return tensor

    for name, module in model.layers():
        module.register_forward_pre_hook(lambda *_, name=name: current.__setitem__(0, name))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with autocast, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.zeros((2, 64), dtype=torch.long))
    for name, storages in saved.items():
        if name != "lm_head":  # the loss's saves, which the graph adds to the head, ran outside the forward
            # measured: equal but for the attention's log-sum-exp, laid out apart on meta (16 bytes a block)
            assert layers[name].activation_bytes == pytest.approx(sum(storages.values()), rel=1e-3, abs=64), name


def test_qlora_quantises_block_linears_and_leaves_embeddings_and_head_in_their_dtype():
    layers, _ = _layers("qlora")
    full, _ = _layers("full")
    block = layers["h.0"]
    assert QLORA_BYTES_PER_WEIGHT == pytest.approx(0.515869, abs=1e-6)
    assert block.frozen_bytes == math.ceil(BLOCK_LINEAR_WEIGHTS * QLORA_BYTES_PER_WEIGHT + (BLOCK_PARAMS - BLOCK_LINEAR_WEIGHTS) * 4)
    assert block.scratch_bytes == 128 * 512 * 4  # the largest linear, dequantised to the compute dtype (fp32)
    assert block.work_flops == pytest.approx(layers["h.0"].work_flops)
    lora, _ = _layers("lora")
    assert block.work_flops - lora["h.0"].work_flops == pytest.approx(2 * DEQUANT_FLOPS_PER_WEIGHT * BLOCK_LINEAR_WEIGHTS)
    # the tied embedding and head: unquantised, no adapters, the shared weight frozen once per stage
    for name in ("embed", "lm_head"):
        assert layers[name].params == 0 and layers[name].scratch_bytes == 0
        assert layers[name].frozen_bytes == 4 * full[name].params
        assert layers[name].tied_frozen_bytes == 4 * 32768 and layers[name].tied_params == 0


@pytest.mark.slow  # 1.2 s: four adapted graphs measured
def test_named_targets_dropout_and_recompute():
    layers, _ = _layers("lora", finetune={"lora_targets": ("c_attn",), "lora_dropout": 0.1})
    full, _ = _layers("full")
    assert layers["h.0"].params == 4 * (128 + 384)
    assert layers["h.0"].activation_bytes != full["h.0"].activation_bytes  # measured with the adapters
    recomputed, _ = _layers("lora", recompute=True)
    full_recomputed, _ = _layers("full", recompute=True)
    assert recomputed["h.0"].activation_bytes == full_recomputed["h.0"].activation_bytes  # only the block input
    with pytest.raises(InputError, match="q_proj match no linear module"):
        _layers("lora", finetune={"lora_targets": ("q_proj",)})


def _two_layer_problem(**layer_fields: object) -> Problem:
    # two layers of 1 TFLOP of work each; both devices 1 TFLOP/s, 1 GB/s: a send between them takes 1.5 s
    layers = [layer(f"l{i}", flops=1e12, out=int(0.75e9), **layer_fields) for i in range(2)]
    # budgets that hold the last stage's kept outputs (8 x 0.75 GB) and the pipeline's buffers
    return Problem(tuple(layers), (device("a", 10**11), device("b", 10**11)),
                   Setup(micro_batches=8, schedule="gpipe", finetune="lora"))


def test_the_work_flops_decide_the_split():
    # one device: 8 x 2 s = 16 s; split: (1 + 1.5) + 1 + 7 x 2.5 = 21 s. With 3x the forward (full
    # fine-tuning's work) the split would win (27 + 8 x 1.5 = 39 s against 48 s).
    plan = solve_exact(_two_layer_problem(work_flops=1e12))
    assert len(plan.stages) == 1 and plan.objective_s == pytest.approx(16.0)
    assert len(solve_exact(_two_layer_problem()).stages) == 2


def test_a_stage_holds_one_dequantised_weight_at_a_time_and_a_tied_frozen_weight_once():
    layers = [layer("embed", frozen_bytes=300, tied_group="w", tied_frozen_bytes=200),
              layer("h", frozen_bytes=100, scratch_bytes=400), layer("h2", frozen_bytes=100, scratch_bytes=500),
              layer("head", frozen_bytes=200, tied_group="w", tied_frozen_bytes=200)]
    p = Problem(tuple(layers), (device("a", 1300),), Setup(finetune="qlora"))
    (stage,) = evaluate_placement(p, [(0, [0, 1, 2, 3])])
    assert stage.frozen_bytes == 300 + 100 + 100 + 200 - 200 and stage.scratch_bytes == 500
    assert stage.memory_bytes == 1000 and stage.memory_parts_bytes == {
        "frozen": 500.0, "params": 0.0, "grads": 0.0, "optimizer": 0.0, "activations": 0.0, "working": 0.0,
        "scratch": 500.0}
    assert solve_exact(p).objective_s is not None
    tighter = Problem(tuple(layers), (device("a", 999),), Setup(finetune="qlora"))
    assert solve_exact(tighter).status == "infeasible"


def test_device_map_auto_runs_the_gpus_one_after_another():
    # accelerate's rule keeps room on device a for the largest layer (400): l0 there, l1 and l2 on b;
    # the GPUs run in turn: T = m x (t_a + t_b), each holding one micro-batch's activations
    layers = [layer(f"l{i}", flops=1e12, act=150, out=0, frozen_bytes=400, work_flops=2e12) for i in range(3)]
    p = Problem(tuple(layers), (device("a", 1000), device("b", 1200)),
                Setup(micro_batches=4, schedule="gpipe", finetune="lora"))
    plan = solve(p, "device-map")
    assert [list(stage.layers) for stage in plan.stages] == [["l0"], ["l1", "l2"]]
    assert plan.objective_s == pytest.approx(4 * (2.0 + 4.0))
    assert [stage.activation_bytes for stage in plan.stages] == [150, 300]
    assert plan.feasible and solver_label("device-map", "qlora") == "device_map=auto + QLoRA"
    assert "device-map" in compare(p) and "device-map" not in compare(replace(p, layers=(layer("x"),),
                                                                             setup=Setup()))
    tight = replace(p, devices=(device("a", 1000), device("b", 1099)))
    assert solve(tight, "device-map").status == "infeasible"  # b's 800 weights fit, not with 300 activations

"""A model as a networkx graph of layers, built on the meta device.

Nodes are the layers of the model's chain, in execution order, each carrying
its measured costs for one micro-batch (core.model.measure.LayerCost fields);
edges carry the bytes sent from one layer to the next. Graphs are cached per
(model, batch shape, precision, mode, recompute): in memory, so dragging a
budget re-plans without re-measuring, and on disk (core.system.disk_cache), so the
next process plans a measured model without importing torch.
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from typing import Any

import networkx as nx

from core.errors import InputError
from core.model.model_spec import ModelSpec
from core.planning.finetune import FineTune
from core.planning.problem import TENSOR_PARALLEL_SIZES, Layer
from core.planning.setup import TrainingSetup
from core.system.disk_cache import code_version, package_versions, read_entry, write_entry

# What a graph is measured by: a change to any of these invalidates the disk cache.
_MEASURING_CODE = ("core/model/graph.py", "core/model/measure.py", "core/model/meta_attention.py",
                   "core/model/short_run.py", "core/model/transient.py", "core/model/gpt.py", "core/model/hf.py",
                   "core/model/hf_meta_routing.py", "core/model/autocast_meta.py", "core/model/lora.py",
                   "core/model/tensor_parallel_split.py", "core/model/hf_anatomy.py")
_NUMERIC_FIELDS = ("params", "flops", "activation_bytes", "output_bytes", "input_bytes", "tied_params",
                   "transient_bytes", "pending_grad_bytes", "recomputed_bytes")


def build_layer_graph(spec: ModelSpec, setup: TrainingSetup, host_kernels: bool = False) -> nx.DiGraph:
    """The layer graph of a model under a setup (cached; treat it as read-only); `host_kernels`:
    measured with the attention kernel the host CPU runs (core.model.measure), for a plan on it alone.

    A graph measured before, by any process, is read from the disk cache
    (core.system.disk_cache; `disk_cache.bypassed()` skips it) without importing torch.

    Raises:
        InputError: the model cannot be built or run on the meta device.
    """
    train = setup.mode == "train"
    finetune = setup.finetune if train and setup.finetune.adapters else None
    return _cached_graph(spec.with_context(setup.seq_len), setup.precision, train,
                         setup.recompute, setup.micro_batch_size, setup.seq_len, finetune, host_kernels)


def graph_layers(graph: nx.DiGraph) -> tuple[Layer, ...]:
    """The planner's layers, in execution order."""
    return tuple(
        Layer(
            name=name,
            params=data["params"],
            flops=data["flops"],
            activation_bytes=data["activation_bytes"],
            output_bytes=data["output_bytes"],
            tied_group=data["tied_group"],
            tied_params=data["tied_params"],
            transient_bytes=data["transient_bytes"],
            pending_grad_bytes=data.get("pending_grad_bytes", 0),
            recomputed_bytes=data.get("recomputed_bytes", 0),
            joins_previous=data.get("joins_previous", False),
        )
        for name, data in ((name, graph.nodes[name]) for name in graph.graph["order"])
    )


@functools.lru_cache(maxsize=16)
def _cached_graph(spec: ModelSpec, precision: str, train: bool, recompute: bool,
                  micro_batch_size: int, seq_len: int, finetune: FineTune | None = None,
                  host_kernels: bool = False) -> nx.DiGraph:
    key = graph_cache_key(spec, precision, train, recompute, micro_batch_size, seq_len, finetune, host_kernels)
    stored = read_entry("graphs", key)
    if stored is not None and _valid_entry(stored):
        return _graph(spec.name, stored["total_params"], stored["costs"], stored["tensor_parallel_refusals"])
    total_params, costs, refusals = _measure(spec, precision, train, recompute, micro_batch_size, seq_len, finetune,
                                             host_kernels)
    write_entry("graphs", key, {"total_params": total_params, "costs": costs, "tensor_parallel_refusals": refusals})
    return _graph(spec.name, total_params, costs, refusals)


def graph_cache_key(spec: ModelSpec, precision: str, train: bool, recompute: bool,
                    micro_batch_size: int, seq_len: int, finetune: FineTune | None = None,
                    host_kernels: bool = False) -> dict[str, Any]:
    """Everything a measured graph depends on: the model's config, the batch shape, the
    setup, and the versions of torch, transformers and Allot's measuring code."""
    return {"model": spec.identity(), "precision": precision, "train": train, "recompute": recompute,
            "micro_batch_size": micro_batch_size, "seq_len": seq_len,
            **({"finetune": finetune.to_dict()} if finetune is not None else {}),
            **({"host_kernels": True} if host_kernels else {}),
            "versions": {**package_versions("torch", "transformers"), "allot": code_version(*_MEASURING_CODE)}}


def _measure(spec: ModelSpec, precision: str, train: bool, recompute: bool, micro_batch_size: int,
             seq_len: int, finetune: FineTune | None = None, host_kernels: bool = False
             ) -> tuple[int, list[dict[str, Any]], dict[str, str | None]]:
    """Build the model on the meta device and cost each layer: (total params, LayerCost dicts, why the
    model cannot split over each tensor-parallel t > 1, None where it can: core.model.tensor_parallel_split).

    bf16 training is measured as the engines run it: fp32 weights under autocast (core.model.autocast_meta).
    With adapters (docs/design.md, "Fine-tuning") the layers' parameters, FLOPs and linear modules are the
    base model's, their activations and working memory those of the model with its base frozen and PEFT's
    adapters in place, measured the same way (QLoRA's 4-bit base saves what a frozen linear saves)."""
    total_params, costs, refusals = _measure_model(spec, precision, train, recompute, micro_batch_size, seq_len,
                                                   None, host_kernels)
    if finetune is None:
        return total_params, costs, refusals
    _, adapted, _ = _measure_model(spec, precision, train, recompute, micro_batch_size, seq_len, finetune,
                                   host_kernels)
    if not adapted:  # targets that match nothing: core.planning.finetune_costs says so in one line
        return total_params, costs, refusals
    measured = {cost["name"]: cost for cost in adapted}
    for cost in costs:
        for field in ("activation_bytes", "transient_bytes", "pending_grad_bytes", "recomputed_bytes"):
            cost[field] = measured[cost["name"]][field]
    return total_params, costs, refusals


def _measure_model(spec: ModelSpec, precision: str, train: bool, recompute: bool, micro_batch_size: int,
                   seq_len: int, finetune: FineTune | None, host_kernels: bool = False
                   ) -> tuple[int, list[dict[str, Any]], dict[str, str | None]]:
    import contextlib

    import torch

    from core.model.autocast_meta import AutocastOnMeta
    from core.model.gpt import lm_loss
    from core.model.measure import measure_layers
    from core.model.tensor_parallel_split import split_refusal

    autocast = precision == "bf16" and train
    dtype = torch.bfloat16 if precision == "bf16" and not autocast else torch.float32
    casts: contextlib.AbstractContextManager[Any] = AutocastOnMeta() if autocast else contextlib.nullcontext()
    model: torch.nn.Module
    if spec.gpt is not None:
        from core.model.gpt import GPT

        with torch.device("meta"):
            model = GPT(spec.gpt).to(dtype)
        refusals = {str(t): split_refusal(model, t) for t in TENSOR_PARALLEL_SIZES if t > 1}
        if not _with_adapters(model, finetune):
            return 0, [], refusals
        with casts:
            costs = measure_layers(model, model.forward, lm_loss, micro_batch_size, seq_len, train, recompute,
                                   host_kernels)
    else:
        from core.model.hf import balanced_experts, build_hf_model_on_meta, first_line, forward_hf

        try:
            model = build_hf_model_on_meta(spec.hf_config, dtype)
            refusals = {str(t): split_refusal(model, t) for t in TENSOR_PARALLEL_SIZES if t > 1}
            if not _with_adapters(model, finetune):
                return 0, [], refusals
            with balanced_experts(model), casts:
                costs = measure_layers(model, lambda ids: forward_hf(model, ids), lm_loss,
                                       micro_batch_size, seq_len, train, recompute, host_kernels)
            split_costs = [asdict(cost) for cost in costs]
            if finetune is None:  # the adapted pass gives only activations and working memory (_measure)
                split_costs = _with_split_boundaries(model, spec, split_costs)
        except (RuntimeError, ValueError, TypeError, IndexError, ZeroDivisionError) as error:
            if isinstance(error, InputError):
                raise
            # transformers and torch fail deep inside on configs they accept: one line, not a traceback
            raise InputError(f"cannot build or run {spec.name} on the meta device: {first_line(error)}") from None
        return sum(p.numel() for p in model.parameters()), split_costs, refusals
    return sum(p.numel() for p in model.parameters()), [asdict(cost) for cost in costs], refusals


def _with_split_boundaries(model: Any, spec: ModelSpec, costs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The layer costs with what the HF split does at the layers before the first block
    (core.model.hf_anatomy): a layer no stage may start at is marked `joins_previous`, and a
    boundary in front of a layer that reads a computed input carries that input (GPT-2's sum
    of its tables, a hidden state, where the position table's own output has batch 1): the
    layer before it sends the first block's output size. Only a model with several layers
    before its first block is probed; a model the split refuses keeps its costs (`train`
    refuses it whole)."""
    from core.model.hf_anatomy import probe

    first_block = next((index for index, cost in enumerate(costs) if cost["is_block"]), 0)
    if first_block < 2:
        return costs
    try:
        anatomy = probe(model, str(spec.hf_config.get("model_type")))
    except InputError:
        return costs
    hidden_bytes = costs[first_block]["output_bytes"]
    result = []
    for index, cost in enumerate(costs):
        after = costs[index + 1]["name"] if index + 1 < len(costs) else None
        if after is not None and index < first_block and anatomy.reads_computed_input(after):
            cost = {**cost, "output_bytes": max(cost["output_bytes"], hidden_bytes)}
        if cost["name"] in anatomy.joined_to_previous:
            cost = {**cost, "joins_previous": True}
        result.append(cost)
    return result


def _with_adapters(model: Any, finetune: FineTune | None) -> bool:
    """Freeze the base and add the run's adapters as the engines do (QLoRA's base stays a frozen
    linear); False where no adapter is added (its targets match nothing)."""
    if finetune is None:
        return True
    from core.model.lora import add_adapters

    return add_adapters(model, finetune)


def _graph(name: str, total_params: int, costs: list[dict[str, Any]],
           tensor_parallel_refusals: dict[str, str | None]) -> nx.DiGraph:
    graph = nx.DiGraph(model=name, order=[cost["name"] for cost in costs], total_params=total_params,
                       tensor_parallel_refusals=tensor_parallel_refusals)
    for cost in costs:  # linear modules as tuples, also when read back from JSON lists
        graph.add_node(cost["name"], **{**cost, "linears": tuple(tuple(m) for m in cost.get("linears", ()))})
    for producer, consumer in zip(costs, costs[1:]):
        graph.add_edge(producer["name"], consumer["name"], bytes=producer["output_bytes"])
    return graph


def _valid_entry(stored: Any) -> bool:
    """A cache entry has the shape we wrote; anything else is rebuilt (never trusted)."""
    try:
        return isinstance(stored["total_params"], int) and isinstance(stored["tensor_parallel_refusals"], dict) and (
            len(stored["costs"]) > 0) and all(
            isinstance(cost["name"], str) and all(isinstance(cost[field], (int, float)) and cost[field] >= 0
                                                  for field in _NUMERIC_FIELDS)
            for cost in stored["costs"])
    except (KeyError, TypeError):
        return False

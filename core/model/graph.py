"""A model as a networkx graph of layers, built on the meta device.

Nodes are the layers of the model's chain, in execution order, each carrying
its measured costs for one micro-batch (core.model.measure.LayerCost fields);
edges carry the bytes sent from one layer to the next. Graphs are cached per
(model, batch shape, precision, mode, recompute): dragging a budget re-plans
without re-measuring.
"""

from __future__ import annotations

import functools
from dataclasses import asdict

import networkx as nx

from core.model.spec import ModelSpec
from core.planning.problem import Layer
from core.planning.setup import TrainingSetup


def build_layer_graph(spec: ModelSpec, setup: TrainingSetup) -> nx.DiGraph:
    """The layer graph of a model under a setup (cached; treat it as read-only)."""
    return _cached_graph(spec.with_context(setup.seq_len), setup.precision, setup.mode == "train",
                         setup.recompute, setup.micro_batch_size, setup.seq_len)


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
        )
        for name, data in ((name, graph.nodes[name]) for name in graph.graph["order"])
    )


@functools.lru_cache(maxsize=16)
def _cached_graph(spec: ModelSpec, precision: str, train: bool, recompute: bool,
                  micro_batch_size: int, seq_len: int) -> nx.DiGraph:
    import torch

    from core.model.measure import measure_layers

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model: torch.nn.Module
    if spec.gpt is not None:
        from core.model.gpt import GPT, lm_loss

        with torch.device("meta"):
            model = GPT(spec.gpt).to(dtype)
        costs = measure_layers(model, model.forward, lm_loss, micro_batch_size, seq_len, train, recompute)
    else:
        from core.model.gpt import lm_loss
        from core.model.hf import balanced_experts, build_hf_model_on_meta, forward_hf

        model = build_hf_model_on_meta(spec.hf_config, dtype)
        with balanced_experts(model):
            costs = measure_layers(model, lambda ids: forward_hf(model, ids), lm_loss,
                                   micro_batch_size, seq_len, train, recompute)
    graph = nx.DiGraph(model=spec.name, order=[cost.name for cost in costs],
                       total_params=sum(p.numel() for p in model.parameters()))
    for cost in costs:
        graph.add_node(cost.name, **asdict(cost))
    for producer, consumer in zip(costs, costs[1:]):
        graph.add_edge(producer.name, consumer.name, bytes=producer.output_bytes)
    return graph

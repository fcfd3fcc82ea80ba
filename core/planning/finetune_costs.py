"""The planner's layers under LoRA and QLoRA: frozen base weights, adapters, scratch, work.

docs/design.md, "Fine-tuning", gives every formula; in short, per layer of the
measured graph (core.model.graph) with its linear modules (name, d_in, d_out):

- adapters: r x (d_in + d_out) parameters per target module; they are the
  layer's `params`, so they carry gradients and optimizer state at the
  setup's bytes per parameter (core.planning.setup), and only they are
  sharded by ZeRO and synchronised between replicas;
- frozen base weights (`frozen_bytes`): every parameter in its dtype (LoRA);
  QLoRA stores the linear weights of the blocks in NF4 with bitsandbytes'
  default double-quantised constants, the rest (embeddings, head, norms,
  biases) in its dtype;
- scratch (QLoRA): the largest linear weight of the layer, dequantised to its
  dtype while it runs, forward and backward;
- activations and working memory: measured on the model with its base
  frozen and the adapters in place (core.model.graph; gradients still flow
  through the frozen base, which keeps no inputs for weight gradients);
- work: the frozen base's backward computes input gradients only (1x the
  forward instead of 2x), the adapters train fully (k x their forward), and
  QLoRA dequantises each quantised weight once per forward, backward and
  recompute.

Full fine-tuning leaves the graph's layers as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from core.errors import InputError
from core.planning.costs import work_factor
from core.planning.problem import Layer
from core.planning.setup import TrainingSetup

NF4_BYTES_PER_WEIGHT = 0.5  # two 4-bit codes a byte
# bitsandbytes' default (Linear4bit, compress_statistics=True): an 8-bit absmax per 64 weights, and
# per 256 of those blocks one fp32 scale; 0.51587 in all (0.51594 measured on a 4096 x 4096 weight,
# its code tables included). Without double quantisation: one fp32 absmax per 64 weights, 0.5625.
QUANT_CONSTANT_BYTES_PER_WEIGHT = 1 / 64 + 4 / (64 * 256)
QLORA_BYTES_PER_WEIGHT = NF4_BYTES_PER_WEIGHT + QUANT_CONSTANT_BYTES_PER_WEIGHT
# Dequantising a weight moves ~4.5 bytes (0.52 read, 2 written, 2 read again by the matmul); at the
# ~100 FLOP per byte of memory traffic a GPU computes at, that is about 450 FLOPs' worth of time.
DEQUANT_FLOPS_PER_WEIGHT = 450.0


@dataclass(frozen=True)
class LinearModule:
    """A linear module of a layer: its name inside the layer (as PEFT matches it) and shape."""

    name: str
    d_in: int
    d_out: int

    def matches(self, target: str) -> bool:
        """PEFT's rule for a target_modules name: the whole name, or its last parts."""
        return self.name == target or self.name.endswith("." + target)

    def adapter_params(self, rank: int) -> int:
        return rank * (self.d_in + self.d_out)


def linear_modules(node: dict[str, Any]) -> tuple[LinearModule, ...]:
    """A graph node's linear modules (tuples in memory, lists when read from the disk cache)."""
    return tuple(LinearModule(str(name), int(d_in), int(d_out)) for name, d_in, d_out in node.get("linears", ()))


def default_targets(graph: Any) -> tuple[str, ...]:
    """The attention and MLP projections: the last name part of every linear module in the
    blocks (PEFT's "all-linear", which leaves the output head out), in the order met."""
    names: list[str] = []
    for name in graph.graph["order"]:
        node = graph.nodes[name]
        if node.get("is_block"):
            for module in linear_modules(node):
                short = module.name.rsplit(".", 1)[-1]
                if short not in names:
                    names.append(short)
    return tuple(names)


def lora_targets(graph: Any, setup: TrainingSetup) -> tuple[str, ...]:
    """The target module names: the setup's, or the model's projections.

    Raises:
        InputError: a named target matches no linear module of the model.
    """
    asked = setup.finetune.lora_targets
    if not asked:
        return default_targets(graph)
    modules = [module for name in graph.graph["order"] for module in linear_modules(graph.nodes[name])]
    missing = [target for target in asked if not any(module.matches(target) for module in modules)]
    if missing:
        known = ", ".join(default_targets(graph)) or "none"
        raise InputError(f"lora-targets: {', '.join(missing)} match no linear module of the model "
                         f"(its projections: {known})")
    return asked


def finetune_layers(graph: Any, setup: TrainingSetup, layers: tuple[Layer, ...]) -> tuple[Layer, ...]:
    """The graph's planner layers under the setup's fine-tuning method (unchanged for full)."""
    if not setup.finetune.adapters:
        return layers
    targets = lora_targets(graph, setup)
    return tuple(_adapted(layer, graph.nodes[layer.name], setup, targets) for layer in layers)


def _adapted(layer: Layer, node: dict[str, Any], setup: TrainingSetup, targets: tuple[str, ...]) -> Layer:
    finetune = setup.finetune
    dtype_bytes = int(setup.bytes_per_param_split()[0])  # the base's dtype: fp32 under the engines' bf16 autocast
    tokens = setup.tokens_per_micro_batch
    modules = linear_modules(node)
    # the default targets are the blocks' projections; targets named by the user are wherever they match
    anywhere = bool(finetune.lora_targets) or bool(node.get("is_block"))
    adapted = [m for m in modules if anywhere and any(m.matches(t) for t in targets)]
    quantised = [m for m in modules if finetune.method == "qlora" and node.get("is_block")]
    quantised_weights = sum(m.d_in * m.d_out for m in quantised)
    frozen = (layer.params - quantised_weights) * dtype_bytes + quantised_weights * QLORA_BYTES_PER_WEIGHT
    adapter_flops = sum(2.0 * tokens * m.adapter_params(finetune.lora_rank) for m in adapted)
    k = work_factor(setup.to_problem_setup())
    frozen_factor = 1 if setup.mode == "infer" else k - 1  # forward, input-gradient backward, recompute
    work = (frozen_factor * layer.flops + k * adapter_flops
            + frozen_factor * DEQUANT_FLOPS_PER_WEIGHT * quantised_weights)
    return Layer(
        name=layer.name,
        params=sum(m.adapter_params(finetune.lora_rank) for m in adapted),
        flops=layer.flops + adapter_flops,
        activation_bytes=layer.activation_bytes,  # measured with the adapters (core.model.graph)
        output_bytes=layer.output_bytes,
        tied_group=layer.tied_group,
        tied_params=0,
        inputs=layer.inputs,
        frozen_bytes=math.ceil(frozen),
        tied_frozen_bytes=layer.tied_params * dtype_bytes,  # shared embeddings and heads stay unquantised
        scratch_bytes=max((m.d_in * m.d_out * dtype_bytes for m in quantised), default=0),
        work_flops=work,
        transient_bytes=layer.transient_bytes,
        joins_previous=layer.joins_previous,
        pending_grad_bytes=layer.pending_grad_bytes,  # measured with the adapters (core.model.graph)
        recomputed_bytes=layer.recomputed_bytes,
    )


"""Measure a model whose blocks are all alike on a short run of them (docs/design.md, "The layer graph").

The first two blocks, one from the middle and the last two stand in for the
whole stack while a measurement runs (core.model.measure); each block of the
model then takes the costs of the measured block in its position. "Alike" is
what a measurement on the meta device can see: module types, parameter and
buffer shapes, dtypes and trainability, scalar settings other than the block's
own number, and the config's per-layer entries.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch.nn as nn

if TYPE_CHECKING:
    from core.model.measure import LayerCost


# Blocks measured where every block is alike: the first two, one in the middle, the last two. Each block
# of the model then has a measured block with a neighbour of its kind on each side (docs/design.md,
# "The layer graph"); a model of no more blocks than this is measured whole.
SHORT_RUN = 5
# Attributes that number a block among its peers: they differ between blocks that are otherwise alike.
_INDEX_ATTRIBUTES = frozenset({"layer_idx", "layer_id", "layer_index", "layer_number", "block_idx"})


@contextlib.contextmanager
def short_run(model: nn.Module, blocks: nn.ModuleList, tied_layers: Collection[str]
              ) -> Iterator[Callable[[list[LayerCost]], list[LayerCost]]]:
    """Run the model over a short run of its blocks where they are all alike (same modules, shapes and
    settings, _block_signature), and give each block the costs of the measured one in its position
    (first, second, middle, second to last, last): a block's costs depend on its own shapes and on its
    neighbours', and measuring 5 blocks of 80 takes a sixteenth of the time. Blocks that share a
    tensor (a block among `tied_layers`), or differ (Gemma's sliding and global layers), are all measured."""
    count, prefix = len(blocks), prefix_of(model, blocks)
    shares_tensors = any(name.startswith(f"{prefix}.") for name in tied_layers)
    if count <= SHORT_RUN or shares_tensors or not all_alike(model, blocks):
        yield as_measured
        return
    parent, attribute = next((module, name) for module in model.modules()
                             for name, child in module.named_children() if child is blocks)
    parent._modules[attribute] = nn.ModuleList([blocks[index] for index in _measured_blocks(count)])
    try:
        yield functools.partial(expanded, prefix=prefix, count=count)
    finally:
        parent._modules[attribute] = blocks


def as_measured(costs: list[LayerCost]) -> list[LayerCost]:
    """The costs of a model measured whole, as they are."""
    return costs


def prefix_of(model: nn.Module, blocks: nn.ModuleList) -> str:
    return next(name for name, module in model.named_modules() if module is blocks)


def _measured_blocks(count: int) -> tuple[int, int, int, int, int]:
    """The blocks a short run measures, by position: first, second, middle, second to last, last."""
    return 0, 1, count // 2, count - 2, count - 1


def expanded(costs: list[LayerCost], prefix: str, count: int) -> list[LayerCost]:
    """The measured short run's costs with every block of the model in place, each a copy of the measured
    block in its position (short_run): the ends as measured, every other block as the middle one."""
    first, second, middle, before_last, last = _measured_blocks(count)
    measured_index = {first: 0, second: 1, before_last: 3, last: 4}
    by_name = {cost.name: cost for cost in costs}
    result: list[LayerCost] = []
    for cost in costs:
        if cost.name == f"{prefix}.0":
            result.extend(replace(by_name[f"{prefix}.{measured_index.get(block, 2)}"], name=f"{prefix}.{block}")
                          for block in range(count))
        elif not cost.name.startswith(f"{prefix}."):
            result.append(cost)
    return result


def all_alike(model: nn.Module, blocks: nn.ModuleList) -> bool:
    per_layer = _per_layer_settings(model, len(blocks))
    first = _block_signature(blocks[0], per_layer, 0)
    return all(_block_signature(block, per_layer, index) == first for index, block in enumerate(blocks))


def _per_layer_settings(model: nn.Module, count: int) -> list[tuple[str, Sequence[Any]]]:
    """The config's lists with an entry per block (layer types, no-RoPE layers): a block's entry is part of
    what it is, also where the forward reads it from the config rather than from the block."""
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", None)
    configs = [settings for settings in (config, text) if settings is not None]
    return [(key, value) for settings in configs for key, value in sorted(getattr(settings, "__dict__", {}).items())
            if isinstance(value, (list, tuple)) and len(value) == count]


def _block_signature(block: nn.Module, per_layer: list[tuple[str, Sequence[Any]]], index: int) -> tuple[Any, ...]:
    """What a measurement of a block depends on: each module's type, its parameters' and buffers' shapes,
    dtypes and trainability, its scalar settings (but not the block's own number), and the config's
    per-layer entries for it."""
    modules = tuple((name, type(module).__qualname__, *_module_signature(module)) for name, module in block.named_modules())
    return modules, tuple((key, repr(values[index])) for key, values in per_layer)


def _module_signature(module: nn.Module) -> tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]:
    parameters = tuple((key, tuple(p.shape), p.dtype, p.requires_grad) for key, p in module.named_parameters(recurse=False))
    buffers = tuple((key, tuple(b.shape), b.dtype) for key, b in module.named_buffers(recurse=False))
    settings = tuple(sorted((key, _setting(value)) for key, value in vars(module).items()
                            if not key.startswith("_") and key not in _INDEX_ATTRIBUTES and _setting(value) is not None))
    return parameters, buffers, settings


def _setting(value: Any) -> Any:
    """A scalar setting (or a tuple of them) as comparable data; None for anything else."""
    scalars = (bool, int, float, str)
    if isinstance(value, scalars):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(item, scalars) for item in value):
        return tuple(value)
    return None

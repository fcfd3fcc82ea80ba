"""A model's module tree as plain JSON, and its stand-in rebuilt on the meta device.

accelerate places a model by walking its modules: their names and order, their
class names (the blocks it must not split), the shape and dtype of every
parameter and buffer, which parameters are one tensor (tied weights) and
which modules are one module registered under several names. It reads
nothing else. The tree keeps exactly that, so accelerate's placement of
the stand-in is its placement of the model (tests compare the two), and a
model placed once is placed again without importing transformers
(`placeable_hf_model` keeps trees in the disk cache, core.system.disk_cache).

    {"class": "LlamaForCausalLM",
     "parameters": [["weight", [32000, 4096], "bfloat16", null], ...],   # name, shape, dtype, tied to
     "buffers": [["inv_freq", [64], "float32", false], ...],             # name, shape, dtype, persistent
     "children": [["model", {...}], ["lm_head", {...}]]}   # or ["act", {"same_as": "conv.1"}]
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from core.model.model_spec import ModelSpec
from core.system.disk_cache import code_version, package_versions, read_entry, write_entry

# What a tree is made by: a change invalidates its disk cache entries.
_TREE_CODE = ("core/model/module_tree.py", "core/model/hf.py", "core/model/measure.py")


def placeable_hf_model(spec: ModelSpec, dtype: torch.dtype) -> tuple[nn.Module, str]:
    """An HF model on the meta device as accelerate sees it, and the class name of its blocks.

    The model is built with transformers (core.model.hf) once; its tree is kept in the
    disk cache, and later calls rebuild the stand-in from it without importing transformers.

    Raises:
        InputError: the model cannot be built on the meta device.
    """
    key = {"model": spec.identity(), "dtype": _dtype_name(dtype),
           "versions": {**package_versions("torch", "transformers"), "allot": code_version(*_TREE_CODE)}}
    stored = read_entry("modules", key)
    if isinstance(stored, dict) and isinstance(stored.get("tree"), dict) and isinstance(stored.get("block"), str):
        return rebuild_module_tree(stored["tree"]), stored["block"]
    from core.model.hf import build_hf_model_on_meta
    from core.model.measure import layer_chain

    model = build_hf_model_on_meta(spec.hf_config, dtype)
    blocks = [type(module).__name__ for name, module in layer_chain(model) if name.rsplit(".", 1)[-1].isdigit()]
    block = blocks[0] if blocks else ""
    write_entry("modules", key, {"tree": describe_module_tree(model), "block": block})
    return model, block


def describe_module_tree(model: nn.Module) -> dict[str, Any]:
    """The tree of `model` (any device): a tied parameter, or a module registered in more than one
    place (Phi-4-multimodal's one activation under several names), names the first place it was seen."""
    return _describe(model, "", {}, {})


def rebuild_module_tree(tree: dict[str, Any]) -> nn.Module:
    """A module on the meta device with the tree's names, class names, tensors, ties and shared modules."""
    return _rebuild(tree, "", {}, {}, {})


def _describe(module: nn.Module, prefix: str, parameters_seen: dict[int, str],
              modules_seen: dict[int, str]) -> dict[str, Any]:
    modules_seen[id(module)] = prefix.removesuffix(".")
    parameters = []
    for name, parameter in module._parameters.items():
        if parameter is None:
            continue
        full = prefix + name
        parameters.append([name, list(parameter.shape), _dtype_name(parameter.dtype),
                           parameters_seen.get(id(parameter))])
        parameters_seen.setdefault(id(parameter), full)
    buffers = [[name, list(buffer.shape), _dtype_name(buffer.dtype), name not in module._non_persistent_buffers_set]
               for name, buffer in module._buffers.items() if buffer is not None]
    children = [[name, {"same_as": modules_seen[id(child)]} if id(child) in modules_seen
                 else _describe(child, f"{prefix}{name}.", parameters_seen, modules_seen)]
                for name, child in module._modules.items() if child is not None]
    return {"class": type(module).__name__, "parameters": parameters, "buffers": buffers, "children": children}


def _rebuild(tree: dict[str, Any], prefix: str, built: dict[str, nn.Parameter],
             classes: dict[str, type[nn.Module]], modules: dict[str, nn.Module]) -> nn.Module:
    module = modules[prefix.removesuffix(".")] = _stand_in_class(tree["class"], classes)()
    for name, shape, dtype, tied_to in tree["parameters"]:
        parameter = built[tied_to] if tied_to is not None else nn.Parameter(
            torch.empty(shape, dtype=_dtype(dtype), device="meta"), requires_grad=False)
        module.register_parameter(name, parameter)
        built.setdefault(prefix + name, parameter)
    for name, shape, dtype, persistent in tree["buffers"]:
        module.register_buffer(name, torch.empty(shape, dtype=_dtype(dtype), device="meta"), persistent=persistent)
    for name, child in tree["children"]:
        module.add_module(name, modules[child["same_as"]] if "same_as" in child
                          else _rebuild(child, f"{prefix}{name}.", built, classes, modules))
    return module


def _stand_in_class(name: str, classes: dict[str, type[nn.Module]]) -> type[nn.Module]:
    """One class per name within a tree: accelerate tells modules apart by class name only."""
    if name not in classes:
        classes[name] = type(name, (nn.Module,), {"__doc__": "A stand-in with the layout of the model's own class."})
    return classes[name]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"not a torch dtype: {name!r}")
    return dtype

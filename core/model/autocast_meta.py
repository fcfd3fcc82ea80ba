"""bf16 autocast on meta tensors, as the engines train (docs/design.md, "The complete memory model").

The engines train bf16 under `torch.autocast` over fp32 parameters
(core/training/engine/numerics.py): weights, gradients and optimizer states
stay fp32, and each matmul-like op casts its inputs to bf16, the weights once
per autocast region (a stage's forward of one micro-batch). The bf16 copies an
op saves for backward, the weights' among them, live until that micro-batch's
backward, so each micro-batch in flight holds its own bf16 copy of the stage's
matmul weights. torch's autocast does not run on the meta device (it keys on
the CPU or CUDA backend), so `AutocastOnMeta` does the same casts above
autograd for the ops of torch's lower-precision list, which CPU and CUDA
share (linear, matmul, mm, bmm, addmm, baddbmm, convolutions, attention);
everything else runs in the dtype of its inputs, as under CPU autocast.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

_LOWER_PRECISION = frozenset({
    "linear", "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "addmm", "addbmm", "baddbmm",
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
})


_ACTIVE: list[AutocastOnMeta] = []  # the modes entered, innermost last


def lower_precision_dtype() -> torch.dtype | None:
    """The dtype an `AutocastOnMeta` in force casts to, or None (for measure's attention stand-in,
    which torch function modes do not see)."""
    return _ACTIVE[-1].dtype if _ACTIVE else None


def end_autocast_region() -> None:
    """Drop the weight casts of the modes in force, as torch's autocast drops its cache when a
    stage's forward (its autocast region) ends: the backward holds only the copies it saved."""
    for mode in _ACTIVE:
        mode._casts.clear()


class AutocastOnMeta(TorchFunctionMode):
    """Cast the float inputs of torch's lower-precision ops to `dtype`, each parameter once (module docstring)."""

    def __init__(self, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.dtype = dtype
        self._casts: dict[int, torch.Tensor] = {}  # autocast's cache: a leaf that needs grad is cast once

    def __enter__(self) -> AutocastOnMeta:
        _ACTIVE.append(self)
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        _ACTIVE.pop()
        super().__exit__(*exc)

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "").split(".")[0]
        if name in _LOWER_PRECISION:
            args, kwargs = tree_map(self._cast, (args, kwargs))
        return func(*args, **kwargs)

    def _cast(self, value: Any) -> Any:
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dtype == self.dtype:
            return value
        if not (value.is_leaf and value.requires_grad):
            return value.to(self.dtype)
        key = id(value)
        if key not in self._casts:
            self._casts[key] = value.to(self.dtype)
        return self._casts[key]

"""The working memory of each layer, measured on meta tensors (docs/design.md, "Cost model v1").

A training step holds, besides the state and the activations saved for
backward, the tensors a layer's pass makes and drops: the gradient flowing
back through it, its backward's temporaries (a GELU's gradient, the matmul
that becomes a weight's gradient before it is added into `.grad`), and for
the last layer the logits' loss temporaries. `WorkingMemory` is a
TorchDispatchMode that counts every storage an op returns while it lives, in
three kinds: saved for backward by a layer (the saved-tensor hook marks
them), parameters' gradients (a post-accumulate hook marks them) and the
rest. While a layer runs forward (from its forward pre-hook to the next
layer's) or backward (from its backward pre-hook, or the loss's backward for
the last layer, to the next one's), the rest plus what the layer still keeps
saved can peak above all it saves (its `activation_bytes`): that excess is its
figure. The gradients are priced by the state term, so a stage's peak is its
state, its saved activations and its largest layer's figure, held once.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

_OTHER, _SAVED, _GRAD = range(3)


class WorkingMemory(TorchDispatchMode):
    """Peak working bytes per layer of one micro-batch's forward, loss and backward (module docstring)."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        super().__init__()
        self.names = tuple(names)
        # the model's state: parameters and buffers (an MoE router's bias read through a view is not
        # working memory of the layer that reads it)
        self._params = {t.untyped_storage()._cdata for t in (*model.parameters(), *model.buffers())}
        self._model = model
        self._live: dict[int, tuple[int, int, str | None]] = {}  # id(storage) -> (kind, bytes, saving layer)
        self._bytes = [0, 0, 0]
        self.current: str | None = None
        self.peak: dict[str, int] = dict.fromkeys(self.names, 0)  # the rest plus its own saved, at most
        self._saved_live: dict[str | None, int] = dict.fromkeys(self.names, 0)
        self._saved_total: dict[str | None, int] = dict.fromkeys(self.names, 0)

    def attach(self, chain: Sequence[tuple[str, nn.Module]]) -> list[Any]:
        """Window hooks on every layer, and a gradient hook on every parameter."""
        handles = []
        for name, module in chain:
            handles.append(module.register_forward_pre_hook(self._opens(name)))
            handles.append(module.register_full_backward_pre_hook(self._opens(name)))
        for parameter in self._model.parameters():
            if parameter.requires_grad:
                handles.append(parameter.register_post_accumulate_grad_hook(self._gradient))
        return handles

    def backward(self, loss: torch.Tensor, last: str) -> None:
        """Run the backward under the tracker; the loss's backward counts towards the last layer."""
        with self, warnings.catch_warnings():
            # the first layer's inputs (token ids) need no gradient: its window opens all the same
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            self._open(last)
            loss.backward()
        self.current = None

    def transient_bytes(self) -> dict[str, int]:
        """Each layer's peak working bytes above its saved activations."""
        return {name: max(0, self.peak[name] - self._saved_total[name]) for name in self.names}

    # ---------------------------------------------------------------- marks
    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        """Saved for backward: priced by activation_bytes, not here."""
        self._mark(tensor, _SAVED)
        return tensor

    def _gradient(self, parameter: torch.Tensor) -> None:
        if parameter.grad is not None:
            self._mark(parameter.grad, _GRAD)

    def _opens(self, name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            self._open(name)
        return hook

    def _open(self, name: str) -> None:
        self.current = name
        self._note()

    # ------------------------------------------------------------- tracking
    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._add(tensor, _OTHER)
        self._note()
        return out

    def _mark(self, tensor: torch.Tensor, kind: int) -> None:
        key = id(tensor.untyped_storage())
        entry = self._live.get(key)
        if entry is None:
            self._add(tensor, kind)
        elif entry[0] == _OTHER:
            self._take_off(key)
            self._add(tensor, kind)

    def _add(self, tensor: torch.Tensor, kind: int) -> None:
        storage = tensor.untyped_storage()
        key, nbytes = id(storage), storage.nbytes()
        if key in self._live or storage._cdata in self._params or nbytes == 0:
            return
        layer = self.current if kind == _SAVED else None
        self._live[key] = (kind, nbytes, layer)
        self._bytes[kind] += nbytes
        if layer is not None:
            self._saved_live[layer] += nbytes
            self._saved_total[layer] += nbytes
        weakref.finalize(storage, self._take_off, key)

    def _take_off(self, key: int) -> None:
        entry = self._live.pop(key, None)
        if entry is not None:
            kind, nbytes, layer = entry
            self._bytes[kind] -= nbytes
            if layer is not None:
                self._saved_live[layer] -= nbytes

    def _note(self) -> None:
        if self.current is not None:
            here = self._bytes[_OTHER] + self._saved_live[self.current]
            self.peak[self.current] = max(self.peak[self.current], here)

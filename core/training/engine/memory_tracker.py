"""Measured peak memory of a stage during a training step (docs/design.md, "Measured memory").

On CPU nothing tracks tensors, and the process's peak RSS mixes in the
interpreter, torch's own libraries and every stage of the process. So a
`TensorTracker` (a TorchDispatchMode) sees every tensor an op returns and
counts its untyped storage once, while it lives: a weakref finalizer on the
storage takes its bytes off when the last tensor viewing it dies. The
tensors that exist before the step (parameters, buffers, optimizer states)
are registered at its start. The peak of the live bytes during the step is
the figure the cost model predicts (docs/design.md, "Cost model v2").

Several stages in one process (the local engine) label what they create:
a storage belongs to the stage that ran the op (`tracker.stage(i)`), and what
the optimizer step creates for all of them is `SHARED` and counts towards
every stage's figure (optimizer states are then handed to their parameter's
stage). On CUDA the allocator's own peak is the figure (`cuda_peak`).

Tracking costs a Python call per op, so only the first `MEASURED_STEPS`
steps are measured (`measures(step)`); later steps run untracked and the
figure is the largest of the measured steps.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

MEASURED_STEPS = 3  # steps 1..3 are tracked (step 1 creates the optimizer states), the rest run untracked
SHARED = -1  # the label of storages that every stage of the process shares (optimizer step temporaries)
TENSORS, CUDA = "tensors", "cuda"  # measured_memory_source: what the figure counts


def measures(step: int, first_step: int = 1) -> bool:
    """Whether this step is one of the tracked ones (the first MEASURED_STEPS of a job)."""
    return first_step <= step < first_step + MEASURED_STEPS


@dataclass(frozen=True)
class MemoryReading:
    """One stage's measured peak (bytes) and what it counts (`TENSORS` or `CUDA`);
    `reserved_bytes` is the CUDA allocator's reservation at the end of the step (0 on CPU)."""

    peak_bytes: int
    source: str
    reserved_bytes: int = 0


class TensorTracker(TorchDispatchMode):
    """Live untyped-storage bytes per stage label, and each label's peak (see the module docstring)."""

    def __init__(self, labels: Iterable[int] = (0,)):
        super().__init__()
        self.labels = tuple(labels)
        self._current = self.labels[0]
        self._live: dict[int, tuple[int, int]] = {}  # id(storage) -> (label, bytes)
        self._finalizers: dict[int, weakref.finalize] = {}
        self.live_bytes: dict[int, int] = dict.fromkeys((*self.labels, SHARED), 0)
        self.peak_bytes: dict[int, int] = dict.fromkeys(self.labels, 0)

    # ------------------------------------------------------------- labelling
    @contextmanager
    def stage(self, label: int) -> Iterator[None]:
        """Storages created in the block belong to `label` (SHARED: to every stage)."""
        previous, self._current = self._current, label
        try:
            yield
        finally:
            self._current = previous

    def register(self, tensors: Iterable[Any], label: int | None = None) -> None:
        """Count tensors that exist already (parameters, states); a known storage moves to `label`."""
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor):
                self._add(tensor, self._current if label is None else label, relabel=label is not None)

    def reset_peaks(self) -> None:
        """Start a new step: each peak restarts from what is live now."""
        for label in self.labels:
            self.peak_bytes[label] = self._total(label)

    # -------------------------------------------------------------- tracking
    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._add(tensor, self._current)
        return out

    def _add(self, tensor: torch.Tensor, label: int, relabel: bool = False) -> None:
        tensor = getattr(tensor, "_local_tensor", tensor)  # a DTensor: the shard this process holds
        if tensor.is_meta:
            return
        try:
            storage = tensor.untyped_storage()
        except (NotImplementedError, RuntimeError):  # a wrapper subclass without storage of its own
            return
        nbytes, key = storage.nbytes(), id(storage)
        known = self._live.get(key)
        if known is not None and known[1] == nbytes and not (relabel and known[0] != label):
            return
        if known is not None:  # resized, or handed to another stage: take the old entry off first
            self._take_off(key)
            self._finalizers.pop(key).detach()
        if nbytes == 0:
            return
        self._live[key] = (label, nbytes)
        self.live_bytes[label] = self.live_bytes.get(label, 0) + nbytes
        self._finalizers[key] = weakref.finalize(storage, self._freed, key)
        self._note_peak(label)

    def _freed(self, key: int) -> None:
        self._finalizers.pop(key, None)
        self._take_off(key)

    def _take_off(self, key: int) -> None:
        entry = self._live.pop(key, None)
        if entry is not None:
            self.live_bytes[entry[0]] -= entry[1]

    def _total(self, label: int) -> int:
        return self.live_bytes[label] + self.live_bytes[SHARED]

    def _note_peak(self, label: int) -> None:
        for each in self.labels if label == SHARED else (label,):
            self.peak_bytes[each] = max(self.peak_bytes[each], self._total(each))

    def close(self) -> None:
        """Stop counting: detach every finalizer (the tracker is not used again)."""
        for finalizer in self._finalizers.values():
            finalizer.detach()
        self._finalizers.clear()
        self._live.clear()


def stage_tensors(module: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> list[torch.Tensor]:
    """What a stage holds between steps: its parameters, buffers, gradients and optimizer states."""
    tensors = [*module.parameters(), *module.buffers()]
    tensors += [p.grad for p in module.parameters() if p.grad is not None]
    if optimizer is not None:
        own = {id(p) for p in module.parameters()}
        for parameter, state in optimizer.state.items():
            if id(parameter) in own:
                tensors += [value for value in state.values() if isinstance(value, torch.Tensor)]
    return tensors


def _register(tracker: TensorTracker, holdings: Any) -> None:
    """Register each stage's holdings under its label. A function of its own: a loop variable
    in the step's frame would keep last step's gradients alive past zero_grad, counting them twice."""
    for label, tensors in enumerate(holdings()):
        tracker.register(tensors, label)


class StepMeter:
    """Each stage's measured peak over the tracked steps of a job (one stage per label 0..n-1).

    `devices[i]` is stage i's device: CUDA stages read the allocator, the others
    are tracked tensor by tensor. The figure (`readings`) is the largest over the
    tracked steps after the job's first (whose optimizer step creates the states
    while the local engine still counts them as shared), or the first's alone.
    """

    def __init__(self, devices: Iterable[torch.device]):
        self.devices = tuple(devices)
        self.tracker: TensorTracker | None = None
        self._first_step: int | None = None
        self._steps: list[tuple[MemoryReading, ...]] = []

    @contextmanager
    def step(self, step: int, holdings: Any) -> Iterator[TensorTracker | None]:
        """Measure the block if `step` is tracked; `holdings()` lists each stage's tensors held
        before it (stage_tensors). Yields the tracker (None: untracked, or no CPU stage)."""
        if self._first_step is None:
            self._first_step = step
        if not measures(step, self._first_step):
            yield None
            return
        cuda = [device for device in set(self.devices) if device.type == "cuda"]
        for device in cuda:
            torch.cuda.reset_peak_memory_stats(device)
        tracker = None
        if len(cuda) < len(set(self.devices)):
            tracker = TensorTracker(range(len(self.devices)))
            _register(tracker, holdings)
            tracker.reset_peaks()
        self.tracker = tracker
        try:
            if tracker is None:
                yield None
            else:
                with tracker:
                    yield tracker
                _register(tracker, holdings)  # optimizer states: their parameter's stage
            self._steps.append(tuple(self._reading(index, device) for index, device in enumerate(self.devices)))
        finally:
            self.tracker = None
            if tracker is not None:
                tracker.close()

    def _reading(self, index: int, device: torch.device) -> MemoryReading:
        if device.type == "cuda":
            return MemoryReading(int(torch.cuda.max_memory_allocated(device)), CUDA,
                                 int(torch.cuda.memory_reserved(device)))
        assert self.tracker is not None
        return MemoryReading(self.tracker.peak_bytes[index], TENSORS)

    @contextmanager
    def label(self, stage: int) -> Iterator[None]:
        """Inside a tracked step: what the block creates belongs to `stage` (SHARED: to all)."""
        if self.tracker is None:
            yield
        else:
            with self.tracker.stage(stage):
                yield

    def readings(self) -> tuple[MemoryReading, ...] | None:
        """Each stage's figure so far (None before the first tracked step)."""
        if not self._steps:
            return None
        steps = self._steps[1:] or self._steps
        return tuple(max(column, key=lambda reading: reading.peak_bytes) for column in zip(*steps))

"""The local engine: one process, each stage's layers on its device.

Micro-batches run one after another through the stages; activations are
moved (and detached) at each stage boundary and gradients flow back stage by
stage, so each stage's forward and backward time is measured on its own,
exactly as in the pipeline. Gradients are accumulated unscaled and divided by
the number of micro-batches at the end, as torch.distributed.pipelining does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from core.model.gpt import lm_loss
from core.training.engine import checkpoint as ckpt
from core.training.engine.context import RunContext
from core.training.engine.loop import StepStats, train_loop
from core.training.engine.memory_tracker import SHARED, StepMeter, stage_tensors
from core.training.engine.model_stages import build_stages, tied_pair
from core.training.engine.numerics import apply_default_dtype
from core.training.engine.optim import (
    clip_gradients,
    grad_square_sum,
    make_optimizer,
    set_learning_rate,
)
from core.training.engine.stages import named_unique_parameters, norm_parameters, tied_parameters
from core.training.engine.state import apply_payloads, peak_memory_bytes, stage_payload, synchronize
from core.training.metrics import MetricsWriter


class LocalEngine:
    """All stages in this process (see the module docstring)."""

    is_writer = True

    def __init__(self, context: RunContext):
        self.context, self.config = context, context.config
        self.data = context.data()
        self.devices = [torch.device(layout.torch_device) for layout in context.layouts]
        # one device: the built-in GPT's tied weight stays one tensor (HF stages are built apart)
        untie = len(set(self.devices)) > 1 or context.hf is not None
        self.stages = build_stages(context, range(len(context.layouts)), self.devices, untie)
        self.tied = tied_pair(context)
        self.tied_copy = self.tied if (self.tied is not None and untie) else None
        named = named_unique_parameters(self.stages)
        self.names = {id(p): name for name, p in named}
        self.parameters = [p for _, p in named]
        self.optimizer = make_optimizer(named, self.config)
        head = self.tied[1] if self.tied is not None else -1
        self.norm_parameters = [norm_parameters(stage, i == head) for i, stage in enumerate(self.stages)]
        self.meter = StepMeter(self.devices)  # each stage's measured peak memory
        self._measured: dict[str, Any] = {}
        self._val_loss: float | None = None

    def _holdings(self) -> list[list[torch.Tensor]]:
        return [stage_tensors(stage, self.optimizer) for stage in self.stages]

    # ------------------------------------------------------------------ training
    def train_step(self, step: int, lr: float) -> None:
        setup = self.config.setup
        set_learning_rate(self.optimizer, lr)
        inputs, targets = self.data.train_batch(self.config.seed, step,
                                                setup.micro_batches * setup.micro_batch_size, setup.seq_len)
        compute_s = [0.0] * len(self.stages)
        started = time.perf_counter()
        with self.meter.step(step, self._holdings):
            self.optimizer.zero_grad(set_to_none=True)
            losses = [self._micro_batch(x, y, compute_s)
                      for x, y in zip(inputs.chunk(setup.micro_batches), targets.chunk(setup.micro_batches))]
            with self.meter.label(SHARED):  # the update's temporaries: every stage's device holds its share
                for parameter in self.parameters:  # mean over micro-batches, as the pipeline schedule scales
                    if parameter.grad is not None:
                        parameter.grad.div_(setup.micro_batches)
                self._sum_tied_gradients()
                norm = math.sqrt(sum(grad_square_sum(params) for params in self.norm_parameters))
                clip_gradients(self.parameters, norm, self.config.grad_clip)
                self.optimizer.step()
            for device in set(self.devices):
                synchronize(device)
        step_time_s = time.perf_counter() - started
        loss = torch.stack([loss.cpu() for loss in losses]).mean().item()  # host-device sync
        self._measured = {"loss": loss, "grad_norm": norm, "step_time_s": step_time_s, "compute_s": compute_s}

    def _micro_batch(self, x: torch.Tensor, y: torch.Tensor, compute_s: list[float]) -> torch.Tensor:
        """Forward through the stages, then backward in reverse, timing each stage."""
        boundary_inputs, outputs = [], []
        hidden = x
        for index, (stage, device) in enumerate(zip(self.stages, self.devices)):
            started = time.perf_counter()
            with self.meter.label(index):
                hidden = hidden.to(device)
                if index > 0:  # a stage boundary: the next stage's input is a leaf, as in a pipeline
                    hidden = hidden.detach().requires_grad_()
                boundary_inputs.append(hidden)
                hidden = stage(hidden)
                if index == len(self.stages) - 1:
                    hidden = lm_loss(hidden, y.to(device))
                outputs.append(hidden)
            synchronize(device)
            compute_s[index] += time.perf_counter() - started
        for index in reversed(range(len(self.stages))):
            started = time.perf_counter()
            with self.meter.label(index):
                if index == len(self.stages) - 1:
                    outputs[index].backward()
                elif outputs[index].requires_grad:  # else a frozen stage before any adapter (LoRA)
                    grad = boundary_inputs[index + 1].grad
                    assert grad is not None
                    outputs[index].backward(grad.to(self.devices[index]))
            synchronize(self.devices[index])
            compute_s[index] += time.perf_counter() - started
        return outputs[-1].detach()

    def _sum_tied_gradients(self) -> None:
        """Embedding and head copies on two devices get the sum of both gradients."""
        if self.tied_copy is None:
            return
        owner = tied_parameters(self.stages[self.tied_copy[0]])[0]
        copy = tied_parameters(self.stages[self.tied_copy[1]])[1]
        if owner is not None and not owner.requires_grad:  # frozen under LoRA: nothing to sum
            return
        assert owner is not None and copy is not None and owner.grad is not None and copy.grad is not None
        total = owner.grad + copy.grad.to(owner.device)
        owner.grad.copy_(total)
        copy.grad.copy_(total.to(copy.device))

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self) -> None:
        setup = self.config.setup
        for stage in self.stages:
            stage.eval()
        losses = []
        for index in range(self.config.eval_batches):
            inputs, targets = self.data.val_batch(self.config.seed, index,
                                                  setup.micro_batches * setup.micro_batch_size, setup.seq_len)
            for x, y in zip(inputs.chunk(setup.micro_batches), targets.chunk(setup.micro_batches)):
                hidden = x
                for stage, device in zip(self.stages, self.devices):
                    hidden = stage(hidden.to(device))
                losses.append(lm_loss(hidden, y.to(hidden.device)).cpu())
        for stage in self.stages:
            stage.train()
        self._val_loss = torch.stack(losses).mean().item()  # host-device sync

    # -------------------------------------------------------------- measurements
    def collect(self, stop_requested: bool) -> StepStats:
        measured, step_time_s = self._measured, self._measured["step_time_s"]
        readings = self.meter.readings() or ()
        stats = StepStats(
            loss=measured["loss"], grad_norm=measured["grad_norm"], step_time_s=step_time_s,
            stage_compute_s=tuple(measured["compute_s"]),
            stage_idle_s=tuple(max(0.0, step_time_s - c) for c in measured["compute_s"]),
            stage_peak_memory_bytes=tuple(peak_memory_bytes(device) for device in self.devices),
            val_loss=self._val_loss, stop=stop_requested,
            stage_measured_peak_memory_bytes=tuple(reading.peak_bytes for reading in readings),
            stage_measured_memory_source=tuple(reading.source for reading in readings),
            stage_measured_reserved_memory_bytes=tuple(reading.reserved_bytes for reading in readings),
        )
        self._val_loss = None
        return stats

    # --------------------------------------------------------------- checkpoints
    def save_checkpoint(self, step: int) -> None:
        checkpoints = self.context.paths.checkpoints
        staging = ckpt.temp_dir(checkpoints, step)
        for layout, stage in zip(self.context.layouts, self.stages):
            ckpt.write_stage_file(staging, layout.index, stage_payload(step, layout, stage, self.optimizer))
        ckpt.commit_checkpoint(checkpoints, step, len(self.stages))
        ckpt.prune_checkpoints(checkpoints, self.config.keep_checkpoints)

    def restore(self) -> int:
        latest = ckpt.latest_checkpoint(self.context.paths.checkpoints)
        if latest is None:
            return 0
        payloads = [ckpt.load_stage_file(latest, layout.index) for layout in self.context.layouts]
        apply_payloads(payloads, list(self.stages), self.optimizer, self.names)
        return ckpt.checkpoint_step(latest)


def run_local(context: RunContext, emit: Callable[[dict[str, Any]], None],
              should_stop: Callable[[], bool]) -> str:
    """Train a prepared run in this process. Returns finished or stopped."""
    apply_default_dtype()  # fp32, or a test's float64
    torch.manual_seed(context.config.seed)
    engine = LocalEngine(context)
    writer = MetricsWriter(context.paths.metrics)
    try:
        return train_loop(engine, context.config, writer, emit, should_stop, context.predicted_memory_bytes)
    finally:
        writer.close()

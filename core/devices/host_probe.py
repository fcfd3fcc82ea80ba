"""One short run of the host's training work: a transformer block's forward and backward, timed.

What a stage process does per micro-batch is forward and backward of its
blocks: four matmuls, attention, two norms and an activation, then the input
and weight gradients of each, with bf16 autocast over fp32 weights where the
run trains in bf16 (core.training.engine.numerics). Bare matmuls ran at about
1.4x that rate on this VM's EPYC (fp32, one thread: 92 GFLOP/s a CPU second
against 66-71 for gpt-micro's forward and backward), so the probe runs the block itself (docs/design.md, "Host
speed"). Its rate is in the planner's own units: 3 x the block's forward FLOPs
as the planner counts a layer's (`BlockShape.forward_flops`; backward is twice
the forward, core.planning.costs.work_factor) per second.

Rated by CPU time, not only by wall time: on a loaded machine the process
waits for a core, and the wall clock counts the wait as if the CPU were slow.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.units import TFLOP

if TYPE_CHECKING:  # host_speed imports this module when it measures
    from core.devices.host_speed import BlockShape

HEAD_WIDTH = 64  # the probe block's attention heads are 64 wide (GPT-2, llama) where d_model divides so


class ProbeBlock(nn.Module):
    """A pre-norm decoder block of width d and MLP width f: causal attention, GELU MLP."""

    def __init__(self, d_model: int, ffn: int):
        super().__init__()
        heads = max(1, d_model // HEAD_WIDTH)
        self.heads = heads if d_model % heads == 0 else 1
        self.ln_1, self.ln_2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv, self.out = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)
        self.up, self.down = nn.Linear(d_model, ffn), nn.Linear(ffn, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = (t.view(batch, seq, self.heads, -1).transpose(1, 2)
                   for t in self.qkv(self.ln_1(x)).chunk(3, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(batch, seq, width)
        x = x + self.out(y)
        return x + self.down(F.gelu(self.up(self.ln_2(x))))


@dataclass(frozen=True)
class _Workload:
    block: ProbeBlock
    x: torch.Tensor  # the block's input, requiring its gradient as a middle stage's does
    grad: torch.Tensor  # the gradient that arrives from the next block
    bf16: bool
    flops: float  # one forward and backward: 3 x the forward FLOPs

    def run(self) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.block(self.x)
        out.backward(self.grad.to(out.dtype))


@functools.lru_cache(maxsize=2)
def _workload(shape: BlockShape, precision: str) -> _Workload:
    """The block and its tensors, built once per shape (the runs of one measurement reuse them)."""
    generator = torch.Generator().manual_seed(0)
    block = ProbeBlock(shape.d_model, shape.ffn)
    x = torch.randn(shape.batch, shape.seq, shape.d_model, generator=generator, requires_grad=True)
    grad = torch.randn(shape.batch, shape.seq, shape.d_model, generator=generator)
    workload = _Workload(block, x, grad, precision == "bf16", 3.0 * shape.forward_flops)
    workload.run()  # a warm-up: the thread pool, the kernels for this dtype
    return workload


def block_tflops(shape: BlockShape, precision: str, seconds: float) -> float:
    """One short run: TFLOP/s of the block's forward and backward in `precision` on torch's threads
    now, repeated for at least `seconds` and two sets.

    One thread: its own CPU time (time.thread_time) rates it, whatever the load. Several: the
    process's CPU time times the threads, between the wall-clock rate and threads x that rate (a
    thread that waits for a core and one that idles look alike from here).
    """
    work = _workload(shape, precision)
    threads = max(1, torch.get_num_threads())
    sets, started, cpu_started, own_started = 0, time.perf_counter(), time.process_time(), time.thread_time()
    while True:
        work.run()
        sets += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and sets >= 2:
            return _rate(work.flops * sets, threads, elapsed, time.process_time() - cpu_started,
                         time.thread_time() - own_started) / TFLOP


def _rate(flops: float, threads: int, wall_s: float, process_cpu_s: float, thread_cpu_s: float) -> float:
    by_wall = flops / wall_s
    if threads == 1:
        return flops / thread_cpu_s if thread_cpu_s > 0 else by_wall
    by_cpu = flops * threads / process_cpu_s if process_cpu_s > 0 else 0.0
    return max(by_wall, min(by_cpu, threads * by_wall))


def release() -> None:
    """Drop the built blocks and their memory (a measurement is over)."""
    _workload.cache_clear()

"""Before a run starts: does each stage's predicted peak fit the memory that will really hold it?

A plan checks each stage against its device's budget, but a simulated GPU's
budget is its datasheet memory while the host's RAM holds the stage (the host
executes it), and a real GPU may have filled up since it was discovered. So
before launch each stage's predicted peak (StageCost.memory_bytes, per device
of a group: state, buffers, in-flight activations and working memory or the
optimizer step's temporaries, docs/design.md, "Cost model v1" and "v2") is
compared with its holder:

- the host's available memory (psutil) for stages the host executes (the host
  and simulated GPUs), all of them together: they are processes of one machine;
- NVML's free memory for a real GPU (cuda:N), stage by stage.

    shortfall = memory_shortfall(plan, read_holder_memory(plan))
    # 'stage 1 of 2 (A100-80GB, executed by this host's CPU) needs 32.00 GiB at its
    #  predicted peak; the host has 21.90 GiB available: 10.10 GiB short'

The CLI's `train` and the app's Start both refuse with that line (the app beside
a disabled Start). During a run, `memory_overrun` flags a stage whose measured
peak exceeds its prediction by more than OVERRUN_FRACTION (the log and the
Training tab say it with both figures). `out_of_memory_line` turns a run's
allocator error into one readable line. Nothing here imports torch or Qt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from core.devices.names import base_name
from core.planning.front_door import torch_device_of
from core.planning.plan import Plan, StageCost
from core.units import format_bytes

HOST = "cpu"
OVERRUN_FRACTION = 0.10  # a measured peak this much above the prediction is flagged (issue 21)


@dataclass(frozen=True)
class HolderMemory:
    """What can hold a run's stages now: the host's available bytes, each real GPU's free bytes
    (None: unknown, e.g. NVML unavailable; such a GPU is not checked)."""

    host_available_bytes: int
    gpu_free_bytes: Mapping[str, int | None] = field(default_factory=dict)  # "cuda:0" -> bytes


def read_holder_memory(plan: Plan) -> HolderMemory:
    """The host's available memory (psutil), and NVML's free memory of the real GPUs `plan` uses."""
    import psutil

    gpus = sorted({torch_device_of(d) for stage in plan.stages for d in stage.devices} - {HOST})
    free: dict[str, int | None] = {}
    if gpus:
        from core.devices.inventory import gpu_free_bytes

        found = gpu_free_bytes()
        free = {name: found.get(int(name.split(":")[1])) for name in gpus}
    return HolderMemory(host_available_bytes=int(psutil.virtual_memory().available), gpu_free_bytes=free)


def memory_shortfall(plan: Plan, holders: HolderMemory) -> str | None:
    """One line naming the first stage that does not fit its holder, its device and the shortfall;
    None when every stage fits (or the plan has none). With tensor parallelism each device a plan
    names leads a group of t processes that hold the stage's figure each (on the host, all t count)."""
    count = len(plan.stages)
    host_total = 0.0
    for number, stage in enumerate(plan.stages, start=1):
        for device in stage.devices:
            holder = torch_device_of(device)
            if holder == HOST:
                host_total += stage.memory_bytes * plan.tensor_parallel
                if host_total > holders.host_available_bytes:
                    return _host_line(number, count, stage, device, host_total, holders.host_available_bytes)
                continue
            free = holders.gpu_free_bytes.get(holder)
            if free is not None and stage.memory_bytes > free:
                return (f"{stage_label(number, count, device)} needs {format_bytes(stage.memory_bytes)} at its "
                        f"predicted peak; {holder} has {format_bytes(free)} free: "
                        f"{format_bytes(stage.memory_bytes - free)} short")
    return None


def _host_line(number: int, count: int, stage: StageCost, device: str, total: float, available: int) -> str:
    executed = "this host" if base_name(device) == HOST else "this host's CPU"
    need = f"needs {format_bytes(stage.memory_bytes)} at its predicted peak"
    if total > stage.memory_bytes:
        need += f", {format_bytes(total)} with the stages before it on this host"
    return (f"stage {number} of {count} ({device}, executed by {executed}) {need}; the host has "
            f"{format_bytes(available)} available: {format_bytes(total - available)} short")


def memory_overrun(number: int, count: int, predicted_bytes: float | None, measured_bytes: float | None,
                   subject: str | None = None) -> str | None:
    """One line when stage `number` of `count` (or `subject`, e.g. a device whose chunks are counted
    together) measured a peak more than OVERRUN_FRACTION above its prediction (both figures in it);
    None when it is within, or either figure is unknown."""
    if not predicted_bytes or measured_bytes is None or measured_bytes <= predicted_bytes * (1 + OVERRUN_FRACTION):
        return None
    above = measured_bytes / predicted_bytes - 1
    what = subject or f"stage {number} of {count}"
    return (f"{what}: measured peak memory {format_bytes(measured_bytes)} is {above:.0%} above "
            f"its predicted {format_bytes(predicted_bytes)}: the memory model under-counts "
            f"{'it' if subject else 'this stage'}")


def memory_overruns(predicted_bytes: Sequence[float], measured_bytes: Sequence[float],
                    subjects: Sequence[str | None] = ()) -> dict[int, str]:
    """`memory_overrun`'s line for every stage that overruns, by stage index (0-based), each line
    once (a chunked run's chunks of one device share theirs: `subjects`, memory_subjects)."""
    count = len(predicted_bytes)
    lines: dict[int, str] = {}
    for i, (predicted, measured) in enumerate(zip(predicted_bytes, measured_bytes)):
        line = memory_overrun(i + 1, count, predicted, measured, subjects[i] if i < len(subjects) else None)
        if line is not None and line not in lines.values():
            lines[i] = line
    return lines


def memory_subjects(plan: Plan) -> tuple[str | None, ...]:
    """What each stage's memory figure is of: the stage (None), or under a chunked schedule its
    device, all its chunks together (core.training.report.stage_memory_bytes)."""
    if plan.chunks == 1:
        return (None,) * len(plan.stages)
    return tuple(device_memory_subject("+".join(stage.devices)) for stage in plan.stages)


def device_memory_subject(device: str) -> str:
    """A chunked run's memory figure: a device's, its chunks together."""
    return f"device {device}, its chunks together"


# "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1073741824 bytes. Error code 12 ..."
_CPU_ASK = re.compile(r"tried to allocate (\d+) bytes", re.IGNORECASE)
# "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.15 GiB total capacity; ...)"
_GPU_ASK = re.compile(r"tried to allocate ([\d.]+ [KMGT]i?B)", re.IGNORECASE)


def is_out_of_memory(error: BaseException) -> bool:
    """torch's CPU or GPU allocator could not allocate (torch.OutOfMemoryError, or the CPU
    allocator's RuntimeError), or Python's MemoryError."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error)
    return "can't allocate memory" in text or "out of memory" in text.lower()


def stage_label(number: int, count: int, device: str) -> str:
    """'stage 1 of 2 (A100-80GB)': how these lines name a stage (1-based)."""
    return f"stage {number} of {count} ({device})"


def out_of_memory_line(error: BaseException, stages: Sequence[str], device: str) -> str:
    """One readable line for a stage process that ran out of memory: which stage, what held it,
    what it asked for, and what to do.

    Args:
        error: the allocator's error (is_out_of_memory).
        stages: the stages the process ran ("stage 2 of 2 (RTX4090)"), usually one.
        device: the torch device that held them ("cpu", "cuda:0").
    """
    text = str(error)
    cpu_ask, gpu_ask = _CPU_ASK.search(text), _GPU_ASK.search(text)
    asked = (f" allocating {format_bytes(int(cpu_ask.group(1)))}" if cpu_ask
             else f" allocating {gpu_ask.group(1)}" if gpu_ask else "")
    holder = "the host's memory" if device == HOST else f"{device}'s memory"
    return f"{', '.join(stages)} ran out of {holder}{asked}: free memory or plan with less on it, then resume"

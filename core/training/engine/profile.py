"""Measured speed: per-layer forward + backward time on the real devices.

`measure_profile` times every layer of the built-in GPT (or of an HF causal
LM, each layer built as a one-layer HF stage) for one micro-batch
of the setup on each real device (the host CPU, discovered GPUs), the way the
engines run it (each layer's input detached, as at a stage boundary). The
device's effective TFLOP/s is then the canonical model's work over the
measured time, k * sum(flops) / sum(seconds), so a plan made with
`apply_profile` predicts the stage times this hardware achieves.

The host CPU is measured as the pipeline engine runs it: when the spec
shares the host between S cpu devices, S processes time the layers side by
side, each with the threads one stage process gets (cores // S). Simulated catalog GPUs run as CPU processes by design; their
datasheet speed stays.

Profile JSON:
    {"format": 1, "model": "gpt-nano", "gpt": {...GPTConfig}, "setup": {...TrainingSetup},
     "host": "...", "torch": "2.13.0", "created_at": 1.7e9,
     "devices": [{"name": "cpu", "kind": "cpu", "torch_device": "cpu", "shares": 2, "threads": 1,
                  "work_factor": 3, "effective_tflops": 0.041, "total_s": 0.0123,
                  "layers": [{"name": "embed", "flops": 0.0, "fwd_bwd_s": 0.0004}, ...]}]}
"""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.model.config import GPTConfig
from core.model.hf_source import HFModelSource
from core.planning.problem import Device, KindTimes, Problem
from core.planning.setup import TrainingSetup
from core.units import TFLOP

FORMAT = 1


@dataclass(frozen=True)
class LayerTiming:
    name: str
    flops: float
    fwd_bwd_s: float
    weight_bwd_s: float = 0.0  # its weight-gradient backward alone (0: a profile from before the split)


@dataclass(frozen=True)
class DeviceProfile:
    """One measured device: "cpu" (the host, for every cpu#i) or "cuda:N"."""

    name: str
    kind: str
    torch_device: str
    shares: int
    threads: int
    work_factor: int
    effective_tflops: float
    total_s: float  # the layers' times summed: each timed on its own, with its own per-call costs
    layers: tuple[LayerTiming, ...]
    block_s: float | None = None  # the whole model as one block (None: a profile from before blocks)

    @property
    def per_call_overhead_s(self) -> float | None:
        """What timing a layer on its own adds: (sum of layer times - block time) / (layers - 1)."""
        if self.block_s is None or len(self.layers) < 2:
            return None
        return (self.total_s - self.block_s) / (len(self.layers) - 1)


@dataclass(frozen=True)
class Profile:
    model: str
    gpt: dict[str, Any]
    setup: dict[str, Any]
    devices: tuple[DeviceProfile, ...]
    host: str = ""
    torch: str = ""
    created_at: float = 0.0
    hf: dict[str, Any] | None = None  # an HF model's config (then gpt is {})

    def to_dict(self) -> dict[str, Any]:
        data = {"format": FORMAT, **asdict(self)}
        for record, device in zip(data["devices"], self.devices):
            record["per_call_overhead_s"] = device.per_call_overhead_s  # for the reader; derived on load
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        devices = tuple(
            DeviceProfile(**{**{key: value for key, value in entry.items() if key != "per_call_overhead_s"},
                             "layers": tuple(LayerTiming(**layer) for layer in entry["layers"])})
            for entry in data["devices"])
        return cls(model=data["model"], gpt=data["gpt"], setup=data["setup"], devices=devices,
                   host=data.get("host", ""), torch=data.get("torch", ""), created_at=data.get("created_at", 0.0),
                   hf=data.get("hf"))


def load_profile(path: Path | str) -> Profile:
    """Read a profile written by `main.py profile`.

    Raises:
        InputError: missing, not JSON, or not a profile.
    """
    from core.system.durable import read_json

    data = read_json(Path(path), "profile")
    try:
        if data.get("format") != FORMAT:
            raise KeyError("format")
        return Profile.from_dict(data)
    except (KeyError, TypeError) as error:
        raise InputError(f"{path} is not an Allot profile (bad or missing {error})") from None


def save_profile(profile: Profile, path: Path | str) -> None:
    from core.training.run_dir import atomic_write_json

    atomic_write_json(Path(path), profile.to_dict())


def apply_profile(devices: Sequence[Device], profile: Profile) -> tuple[Device, ...]:
    """Devices with their `tflops` replaced by the profile's measured speed.

    cpu devices (cpu, cpu#2, cpu#3 ...) take the host's measurement; when the
    spec shares the host between another number of cpu devices than the
    profile did, each gets the measured speed scaled by profile shares / shares.
    GPUs match by name (cuda:N), else by kind (the GPU model). Others are kept.
    """
    cpu_shares = sum(1 for device in devices if device.kind == "cpu")
    result = []
    for device in devices:
        entry = _measurement_of(device, profile)
        if entry is None:
            result.append(device)
            continue
        scale = entry.shares / cpu_shares if device.kind == "cpu" else 1.0
        result.append(replace(device, tflops=entry.effective_tflops * scale))
    return tuple(result)


def profile_layer_times(problem: Problem, profile: Profile) -> tuple[KindTimes, ...]:
    """The profile's time per layer per device kind, as the problem format's table (docs/design.md,
    "Per-layer times per device kind"): each layer's forward seconds, fwd_bwd_s / k, scaled so the
    layers add up to the whole-model block's time (timing a layer alone adds per-call costs), and for
    cpu devices by profile shares / shares as `apply_profile` scales the speed; and each layer's
    weight backward, weight_bwd_s scaled alike, where the profile split it. A kind is left out
    (its speed alone prices it) where the profile timed other layers than the problem's, and all kinds
    where it timed a micro-batch of other tokens than the problem's."""
    names = [layer.name for layer in problem.layers]
    tokens = profile.setup.get("micro_batch_size", 0) * profile.setup.get("seq_len", 0)
    if problem.setup.tokens_per_micro_batch not in (None, tokens):
        return ()
    cpu_shares = sum(1 for device in problem.devices if device.kind == "cpu")
    tables: dict[str, KindTimes] = {}
    for device in problem.devices:
        entry = _measurement_of(device, profile)
        if entry is None or device.kind in tables or [layer.name for layer in entry.layers] != names:
            continue
        block = entry.block_s if entry.block_s else entry.total_s
        scale = (block / entry.total_s if entry.total_s > 0 else 1.0) / entry.work_factor
        if device.kind == "cpu":
            scale *= cpu_shares / entry.shares
        weights = tuple(layer.weight_bwd_s * scale * entry.work_factor for layer in entry.layers)
        tables[device.kind] = KindTimes(device.kind, tuple(layer.fwd_bwd_s * scale for layer in entry.layers),
                                        weights if any(weights) else ())
    return tuple(tables.values())


def profiled_names(devices: Sequence[Device], profile: Profile) -> tuple[str, ...]:
    """The devices whose speed `profile` measured (apply_profile keeps the others' speeds)."""
    return tuple(device.name for device in devices if _measurement_of(device, profile) is not None)


def _measurement_of(device: Device, profile: Profile) -> DeviceProfile | None:
    """The profile's measurement that speaks for `device`: the host's for a cpu device, else
    the same cuda:N, else a measured GPU of the same model (for cuda:N devices only)."""
    measured = {entry.name: entry for entry in profile.devices}
    if device.kind == "cpu":
        return measured.get("cpu")
    if device.name in measured:
        return measured[device.name]
    if not device.name.startswith("cuda:"):
        return None
    by_kind = {entry.kind: entry for entry in profile.devices if entry.kind != "cpu"}
    return by_kind.get(device.kind)


TimedModel = GPTConfig | HFModelSource  # what can be timed: the built-in GPT or an HF model


def measure_profile(name: str, gpt: TimedModel, setup: TrainingSetup, devices: Sequence[Device],
                    repeats: int = 5, emit: Callable[[str], None] = print) -> Profile:
    """Time the whole model as one block, and every layer on its own, on each real device of
    `devices` (medians of `repeats`); the device's speed is the block's (docs/design.md, "Profiles").

    Raises:
        InputError: no device of the spec is real (only simulated GPUs).
    """
    import torch

    from core.model.model_spec import ModelSpec
    from core.planning.costs import work_factor
    from core.planning.front_door import build_problem
    from core.training.engine.pipeline_launch import threads_per_process

    spec = (ModelSpec(name=name, hf_config_json=gpt.config_json) if isinstance(gpt, HFModelSource)
            else ModelSpec(name=name, gpt=gpt))
    problem = build_problem(spec, setup, tuple(devices))
    flops = [layer.flops for layer in problem.layers]
    k = work_factor(problem.setup)
    cpu_shares = sum(1 for device in devices if device.kind == "cpu")
    targets = ([("cpu", "cpu", cpu_shares)] if cpu_shares else []) + \
        [(d.name, d.kind, 1) for d in devices if d.name.startswith("cuda:")]
    if not targets:
        raise InputError("nothing to profile: simulated catalog GPUs run on the CPU; add cpu or cuda:N devices")
    results = []
    for device_name, kind, shares in targets:
        threads = threads_per_process(shares) if device_name == "cpu" else torch.get_num_threads()
        emit(f"profiling {name} on {device_name} ({threads} threads, {repeats} repeats) ...")
        seconds, block, weights = (time_layers_side_by_side(gpt, setup, threads, repeats, shares)
                                   if device_name == "cpu" else time_layers(gpt, setup, device_name, threads, repeats))
        results.append(DeviceProfile(
            name=device_name, kind=kind, torch_device=device_name, shares=shares, threads=threads, work_factor=k,
            effective_tflops=k * sum(flops) / block / TFLOP, total_s=sum(seconds), block_s=block,
            layers=tuple(LayerTiming(layer.name, f, s, w)
                         for layer, f, s, w in zip(problem.layers, flops, seconds, weights, strict=True)),
        ))
    hf = gpt.config if isinstance(gpt, HFModelSource) else None
    return Profile(model=name, gpt=asdict(gpt) if isinstance(gpt, GPTConfig) else {}, setup=setup.to_dict(),
                   devices=tuple(results), host=socket.gethostname(), torch=torch.__version__,
                   created_at=time.time(), hf=hf)


# (each layer on its own, the whole model as one block, each layer's weight backward alone): seconds
Timings = tuple[list[float], float, list[float]]


def time_layers_side_by_side(gpt: TimedModel, setup: TrainingSetup, threads: int, repeats: int,
                             copies: int) -> Timings:
    """Time the layers and the block in `copies` processes at once, as the pipeline's stage
    processes share the host (its cores, caches and memory bandwidth)."""
    if copies <= 1:
        return time_layers(gpt, setup, "cpu", threads, repeats)
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(copies), context.Queue()
    workers = [context.Process(target=_timing_worker, args=(gpt, setup, threads, repeats, barrier, results))
               for _ in range(copies)]
    for worker in workers:
        worker.start()
    try:
        measured = [results.get(timeout=900) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=10)
    layers = [statistics.median(values) for values in zip(*(timing[0] for timing in measured))]
    weights = [statistics.median(values) for values in zip(*(timing[2] for timing in measured))]
    return layers, statistics.median(timing[1] for timing in measured), weights


def _timing_worker(gpt: TimedModel, setup: TrainingSetup, threads: int, repeats: int, barrier: Any,
                   results: Any) -> None:
    results.put(time_layers(gpt, setup, "cpu", threads, repeats, barrier))


def time_layers(gpt: TimedModel, setup: TrainingSetup, device_name: str, threads: int, repeats: int,
                barrier: Any = None) -> Timings:
    """Median forward + backward seconds of each layer on its own, and of the whole model as one
    block, for one micro-batch (`barrier`: wait on it before timing, so side-by-side copies overlap).

    A layer timed on its own pays a stage boundary, a loss-free backward call and a device sync
    that a block of layers pays once: summed over the layers they over-predict a stage (by 20-28%
    on an H200), so the block's time is what a stage's speed comes from (docs/design.md, "Profiles").
    """
    import torch

    from core.model.gpt import lm_loss
    from core.training.engine.recompute import OFF, PER_BACKWARD
    from core.training.engine.state import synchronize

    device = torch.device(device_name)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        autocast = torch.bfloat16 if setup.precision == "bf16" else None
        recompute = PER_BACKWARD if setup.recomputes else OFF  # W timed as full less input backward
        layers = _one_layer_stages(gpt, device, recompute, autocast)
        block = [_whole_model_stage(gpt, device, recompute, autocast)]
        vocab = gpt.vocab_size
        tokens = torch.randint(0, vocab, (setup.micro_batch_size, setup.seq_len + 1),
                               generator=torch.Generator().manual_seed(0)).to(device)
        samples: list[list[float]] = [[] for _ in layers]
        weight_samples: list[list[float]] = [[] for _ in layers]
        block_samples: list[float] = []
        if barrier is not None:
            barrier.wait()
        for repeat in range(repeats + 1):  # the first pass warms up allocators and kernels
            seconds = _one_pass(layers, tokens[:, :-1], tokens[:, 1:], lm_loss, device, synchronize)
            block_seconds = _one_pass(block, tokens[:, :-1], tokens[:, 1:], lm_loss, device, synchronize)[0]
            weight_seconds = _split_pass(layers, tokens[:, :-1], tokens[:, 1:], lm_loss, device, synchronize)
            for stage in (*layers, *block):
                stage.zero_grad(set_to_none=True)
            if repeat > 0:
                for index, (value, weight) in enumerate(zip(seconds, weight_seconds, strict=True)):
                    samples[index].append(value)
                    weight_samples[index].append(weight)
                block_samples.append(block_seconds)
        return ([statistics.median(values) for values in samples], statistics.median(block_samples),
                [statistics.median(values) for values in weight_samples])
    finally:
        torch.set_num_threads(previous_threads)


def _whole_model_stage(model: TimedModel, device: Any, recompute: str, autocast: Any) -> Any:
    """The whole model as one stage on `device`: the contiguous block a one-stage run computes."""
    from core.training.engine.stages import StageLayout

    if isinstance(model, HFModelSource):
        from core.training.engine.hf_stages import build_hf_stage, hf_layer_names

        source = HFModelSource(model.config_json)
        names = tuple(hf_layer_names(source))
        return build_hf_stage(source, StageLayout(0, str(device), names), device, 0, recompute, autocast)
    from core.training.engine.stages import build_full_model, slice_stages

    full = build_full_model(model, seed=0)
    layout = StageLayout(0, str(device), tuple(layer for layer, _ in full.layers()))
    return slice_stages(full, [layout], False, {0: recompute}, autocast)[0].to(device)


def _one_layer_stages(model: TimedModel, device: Any, recompute: str, autocast: Any) -> list[Any]:
    """Each layer of the model as a stage of its own, on `device` (weights: the seed's; values do not matter)."""
    from core.training.engine.stages import StageLayout

    if isinstance(model, HFModelSource):
        from core.training.engine.hf_stages import build_hf_stage, hf_layer_names

        source = HFModelSource(model.config_json)  # random weights time as loaded ones do
        return [build_hf_stage(source, StageLayout(i, str(device), (name,)), device, 0, recompute, autocast)
                for i, name in enumerate(hf_layer_names(source))]
    from core.training.engine.stages import build_full_model, slice_stages

    full = build_full_model(model, seed=0)
    layouts = [StageLayout(i, str(device), (layer,)) for i, (layer, _) in enumerate(full.layers())]
    return [stage.to(device) for stage in slice_stages(full, layouts, False, dict.fromkeys(range(len(layouts)), recompute),
                                                       autocast)]


def _one_pass(layers: list[Any], x: Any, y: Any, loss_fn: Any, device: Any, synchronize: Any) -> list[float]:
    """Forward layer by layer (inputs detached), then backward in reverse; seconds per layer."""
    seconds = [0.0] * len(layers)
    inputs, outputs = [], []
    hidden = x
    for index, layer in enumerate(layers):
        started = time.perf_counter()
        if index > 0:
            hidden = hidden.detach().requires_grad_()
        inputs.append(hidden)
        hidden = layer(hidden)
        if index == len(layers) - 1:
            hidden = loss_fn(hidden, y)
        outputs.append(hidden)
        synchronize(device)
        seconds[index] += time.perf_counter() - started
    for index in reversed(range(len(layers))):
        started = time.perf_counter()
        if index == len(layers) - 1:
            outputs[index].backward()
        else:
            outputs[index].backward(inputs[index + 1].grad)
        synchronize(device)
        seconds[index] += time.perf_counter() - started
    return seconds


def _split_pass(layers: list[Any], x: Any, y: Any, loss_fn: Any, device: Any, synchronize: Any) -> list[float]:
    """Each layer's weight backward as the zero-bubble schedules run it apart: its whole backward
    (to its input and its weights) less its input backward alone (torch.autograd.grad to the input,
    which skips every weight gradient); the first layer, whose input carries no gradient, is all
    weight backward. Seconds per layer (docs/design.md, "Chunked schedules")."""
    import torch

    inputs, outputs = [], []
    hidden = x
    for index, layer in enumerate(layers):
        if index > 0:
            hidden = hidden.detach().requires_grad_()
        inputs.append(hidden)
        hidden = layer(hidden)
        outputs.append(loss_fn(hidden, y) if index == len(layers) - 1 else hidden)
    weight_s = [0.0] * len(layers)
    grad_out = None
    for index in reversed(range(len(layers))):
        output, params = outputs[index], [p for p in layers[index].parameters() if p.requires_grad]
        needs = [inputs[index]] if index > 0 else []
        input_s, grad_in = 0.0, None
        if needs:
            synchronize(device)
            started = time.perf_counter()
            (grad_in,) = torch.autograd.grad(output, needs, grad_out, retain_graph=True)
            synchronize(device)
            input_s = time.perf_counter() - started
        synchronize(device)
        started = time.perf_counter()
        if needs or params:
            torch.autograd.grad(output, [*needs, *params], grad_out, allow_unused=True)
        synchronize(device)
        weight_s[index] = max(0.0, time.perf_counter() - started - input_s)
        grad_out = grad_in
    return weight_s

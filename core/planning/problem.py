"""The explicit problem: layers, devices with budgets, and the training setup.

This is docs/design.md's "The explicit problem format" as frozen dataclasses, with the
validation that turns a malformed file into one InputError line. It imports
neither torch nor numpy, so `plan --problem` starts fast.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from core.errors import InputError
from core.planning.schedules import SCHEDULE_CHOICES, Schedule, schedule_named

MODES = ("train", "infer")
SCHEDULES = SCHEDULE_CHOICES  # core.planning.schedules: "auto", then one class each
ZERO_STAGES = (0, 1, 2, 3)
AUTO = "auto"  # data_parallel: the solver picks the best divisor of micro_batches
LAYER_TIMES_KEY = "layer_time_s"  # {device kind: {layer name: forward seconds of one micro-batch}}
# {device kind: {layer name: seconds of its weight backward, one micro-batch}}: where `profile` split it
WEIGHT_BACKWARD_KEY = "layer_weight_backward_s"


@dataclass(frozen=True)
class Layer:
    """One node of the layer chain, costs for one micro-batch.

    `inputs` names the layers whose outputs this one reads; None means the
    previous layer (a chain). `tied_group` marks parameters shared with other
    layers (embedding and LM head): a stage holding several layers of one group
    stores the shared `tied_params` once. `transient_bytes` is the working
    memory of one micro-batch's pass through it beyond what it saves (a stage
    holds its largest once: docs/design.md, "Cost model v1").

    Fine-tuning with adapters (docs/design.md, "Fine-tuning"): `params` are the
    trained parameters (the adapters), `frozen_bytes` the frozen base weights as
    stored (bf16, or NF4 with its constants; `tied_frozen_bytes` of them shared
    with the tied group), `scratch_bytes` the largest weight the layer
    dequantises while it runs, and `work_flops` the FLOPs of one micro-batch's
    forward, backward and recompute through the layer (None: work factor k x flops).

    `pending_grad_bytes` are the output gradients of its weighted ops that a split
    backward keeps from a micro-batch's input backward to its weight backward: the
    zero-bubble schedules hold them between the two (docs/design.md, "Chunked schedules").
    With recompute, `recomputed_bytes` is what a block's recompute saves (its activations
    without checkpoint), which those schedules also hold between the two.

    `joins_previous` keeps the layer on the stage of the layer before it: no stage
    may start at it (a model that still needs two tensors of earlier layers there;
    docs/design.md, "The explicit problem format").
    """

    name: str
    params: int
    flops: float
    activation_bytes: int
    output_bytes: int
    tied_group: str | None = None
    tied_params: int = 0
    inputs: tuple[str, ...] | None = None
    frozen_bytes: int = 0
    tied_frozen_bytes: int = 0
    scratch_bytes: int = 0
    work_flops: float | None = None
    transient_bytes: int = 0
    joins_previous: bool = False
    pending_grad_bytes: int = 0
    recomputed_bytes: int = 0


@dataclass(frozen=True)
class Device:
    """A device as the planner sees it: a memory budget, a speed and a link."""

    name: str
    budget_bytes: int
    tflops: float
    bandwidth_gbps: float
    kind: str = ""
    memory_total_bytes: int | None = None  # the whole card, when known (for bars)


@dataclass(frozen=True)
class Setup:
    """How the layers are run: docs/design.md's setup plus optional facts for reports.

    The optional per-parameter split (weights, gradients, optimizer state)
    labels memory in v1; cost model v2 (`data_parallel` d > 1 or `zero` > 0)
    needs it, since ZeRO shards the three parts differently.
    """

    mode: str = "train"
    bytes_per_param: float = 16.0
    micro_batches: int = 1
    schedule: str = "1f1b"
    recompute: bool = False
    tokens_per_micro_batch: int | None = None
    weight_bytes_per_param: float | None = None
    grad_bytes_per_param: float | None = None
    optimizer_bytes_per_param: float | None = None
    data_parallel: int | str = 1
    zero: int = 0
    finetune: str = "full"  # full, lora or qlora: what the layers' frozen/adapter fields describe
    optimizer_step_bytes_per_param: float = 0.0  # the optimizer step's temporaries (docs/design.md)
    # t devices of one node run each stage of each replica, or "auto" (docs/design.md, "Tensor parallelism")
    tensor_parallel: int | str = 1
    # the t the model splits into (its heads, key-value heads and split widths divide t): what "auto" tries
    tensor_parallel_sizes: tuple[int, ...] = (1, 2, 4, 8)

    @property
    def frozen_weights(self) -> bool:
        """LoRA/QLoRA training: no weight gradients for the base, so zero-bubble schedules gain nothing."""
        return self.mode == "train" and self.finetune != "full"

    def __post_init__(self) -> None:
        check_hybrid_setup(self.data_parallel, self.zero, self.micro_batches)
        check_tensor_parallel(self.tensor_parallel)
        if 1 not in self.tensor_parallel_sizes or not set(self.tensor_parallel_sizes) <= set(TENSOR_PARALLEL_SIZES):
            raise InputError(f"tensor_parallel_sizes must hold 1 and only sizes of {TENSOR_PARALLEL_SIZES}, got "
                             f"{list(self.tensor_parallel_sizes)}")
        if self.is_hybrid:
            parts = [self.weight_bytes_per_param, self.grad_bytes_per_param, self.optimizer_bytes_per_param]
            given = [float(part) for part in parts if part is not None]
            if len(given) < 3:
                raise InputError("data_parallel above 1 or zero 1-3 needs the split of bytes_per_param: "
                                 "weight_bytes_per_param, grad_bytes_per_param, optimizer_bytes_per_param")
            if abs(sum(given) - self.bytes_per_param) > 1e-9 * max(1.0, self.bytes_per_param):
                raise InputError(f"weight + grad + optimizer bytes per param ({sum(given):g}) must add up to "
                                 f"bytes_per_param ({self.bytes_per_param:g})")

    @property
    def pipeline_schedule(self) -> Schedule:
        """The schedule object that prices in-flight micro-batches and the step time."""
        return schedule_named(self.schedule)

    @property
    def is_hybrid(self) -> bool:
        """True for cost model v2: replicas (or "auto") or ZeRO sharding."""
        return self.data_parallel != 1 or self.zero != 0


def check_hybrid_setup(data_parallel: Any, zero: Any, micro_batches: int) -> None:
    """docs/design.md's rules for d and z ("Cost model v2") that need no devices.

    Raises:
        InputError: d not a whole number >= 1 or "auto", d not dividing m, z outside 0..3.
    """
    if data_parallel != AUTO:
        if isinstance(data_parallel, bool) or not isinstance(data_parallel, int) or data_parallel < 1:
            raise InputError(f"data-parallel must be a whole number of 1 or more or 'auto', got {data_parallel!r}")
        if micro_batches % data_parallel:
            raise InputError(f"data-parallel {data_parallel} does not divide the {micro_batches} micro-batches: "
                             f"every replica runs micro-batches / data-parallel of them")
    if isinstance(zero, bool) or zero not in ZERO_STAGES:
        raise InputError(f"zero must be 0, 1, 2 or 3, got {zero!r}")


TENSOR_PARALLEL_SIZES = (1, 2, 4, 8)  # t: devices of one node that split every stage (or "auto")


def check_tensor_parallel(value: Any) -> None:
    """t is 1, 2, 4, 8 or "auto" (docs/design.md, "Tensor parallelism").

    Raises:
        InputError: anything else.
    """
    if value != AUTO and (isinstance(value, bool) or value not in TENSOR_PARALLEL_SIZES):
        raise InputError(f"tensor-parallel must be 1, 2, 4, 8 or auto, got {value!r}")


@dataclass(frozen=True)
class KindTimes:
    """Measured forward seconds of every layer (in layer order) for one micro-batch on one device kind
    (docs/design.md, "Per-layer times per device kind")."""

    kind: str
    forward_s: tuple[float, ...]
    weight_backward_s: tuple[float, ...] = ()  # each layer's weight-gradient backward, where measured


@dataclass(frozen=True)
class Problem:
    layers: tuple[Layer, ...]
    devices: tuple[Device, ...]
    setup: Setup = field(default_factory=Setup)
    layer_times: tuple[KindTimes, ...] = ()  # per-layer times per device kind, where given

    def __post_init__(self) -> None:
        d = self.setup.data_parallel
        if isinstance(d, int) and d > len(self.devices):
            raise InputError(f"data-parallel {d} needs groups of {d} devices but there are only "
                             f"{len(self.devices)} devices")

    def forward_times_s(self, kind: str) -> tuple[float, ...] | None:
        """Each layer's measured forward seconds on devices of `kind`, None where the problem gives none."""
        for entry in self.layer_times:
            if entry.kind == kind:
                return entry.forward_s
        return None

    def weight_backward_times_s(self, kind: str) -> tuple[float, ...] | None:
        """Each layer's measured weight-backward seconds on devices of `kind`, None where not measured."""
        for entry in self.layer_times:
            if entry.kind == kind and entry.weight_backward_s:
                return entry.weight_backward_s
        return None

    @property
    def has_adapters(self) -> bool:
        """True for LoRA and QLoRA problems: frozen weights, adapters (docs/design.md, "Fine-tuning")."""
        return self.setup.finetune != "full" or any(
            layer.frozen_bytes or layer.scratch_bytes or layer.work_flops is not None for layer in self.layers)

    @property
    def is_chain(self) -> bool:
        """True when every layer reads only the layer before it."""
        return all(
            layer.inputs is None or layer.inputs == ((self.layers[i - 1].name,) if i else ())
            for i, layer in enumerate(self.layers)
        )

    def stage_may_start(self) -> list[bool]:
        """For each layer, whether a stage may start at it (the first layer always)."""
        return [index == 0 or not layer.joins_previous for index, layer in enumerate(self.layers)]

    def edges(self) -> list[tuple[int, int]]:
        """Data edges (producer index, consumer index) in execution order."""
        index = {layer.name: i for i, layer in enumerate(self.layers)}
        result: list[tuple[int, int]] = []
        for i, layer in enumerate(self.layers):
            sources = layer.inputs if layer.inputs is not None else (
                (self.layers[i - 1].name,) if i else ()
            )
            result.extend((index[name], i) for name in sources)
        return result

    def to_dict(self) -> dict[str, Any]:
        """The explicit problem format, omitting optional fields left at default."""
        result = {
            "layers": [_without_defaults(asdict(layer), Layer) for layer in self.layers],
            "devices": [_device_dict(device) for device in self.devices],
            "setup": _without_defaults(asdict(self.setup), Setup, keep=("mode", "bytes_per_param",
                                                                          "micro_batches", "schedule")),
        }
        names = [layer.name for layer in self.layers]
        if self.layer_times:
            result[LAYER_TIMES_KEY] = {entry.kind: dict(zip(names, entry.forward_s)) for entry in self.layer_times}
        if any(entry.weight_backward_s for entry in self.layer_times):
            result[WEIGHT_BACKWARD_KEY] = {entry.kind: dict(zip(names, entry.weight_backward_s))
                                           for entry in self.layer_times if entry.weight_backward_s}
        return result


# A device's budget is `memory_bytes` in the explicit problem format (docs/design.md), `budget_bytes` in
# the code; the other names a file may hold for the same fields, read as the format's.
_DEVICE_KEY_ALIASES = {"budget_bytes": "memory_bytes", "total_memory_bytes": "memory_total_bytes"}


def device_to_dict(device: Device) -> dict[str, Any]:
    """A device as the problem format and a run directory store it (budget under `memory_bytes`)."""
    return _device_dict(device)


def _device_dict(device: Device) -> dict[str, Any]:
    """A device in the explicit problem format: the budget under docs/design.md's key `memory_bytes`."""
    fields = _without_defaults(asdict(device), Device)
    return {("memory_bytes" if key == "budget_bytes" else key): value for key, value in fields.items()}


def _without_defaults(values: dict[str, Any], cls: Any, keep: tuple[str, ...] = ()) -> dict[str, Any]:
    defaults = cls.__dataclass_fields__
    result = {}
    for key, value in values.items():
        default = defaults[key].default
        if key in keep or key == "name" or value != default:
            result[key] = list(value) if isinstance(value, tuple) else value
    return result

"""The explicit problem: layers, devices with budgets, and the training setup.

This is docs/design.md's "The explicit problem format" as frozen dataclasses, with the
validation that turns a malformed file into one InputError line. It imports
neither torch nor numpy, so `plan --problem` starts fast.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.planning.schedules import SCHEDULE_CHOICES, Schedule, schedule_named

MODES = ("train", "infer")
SCHEDULES = SCHEDULE_CHOICES  # core.planning.schedules: "auto", then one class each
ZERO_STAGES = (0, 1, 2, 3)
AUTO = "auto"  # data_parallel: the solver picks the best divisor of micro_batches
LAYER_TIMES_KEY = "layer_time_s"  # {device kind: {layer name: forward seconds of one micro-batch}}


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

    @property
    def frozen_weights(self) -> bool:
        """LoRA/QLoRA training: no weight gradients for the base, so zero-bubble schedules gain nothing."""
        return self.mode == "train" and self.finetune != "full"

    def __post_init__(self) -> None:
        check_hybrid_setup(self.data_parallel, self.zero, self.micro_batches)
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


@dataclass(frozen=True)
class KindTimes:
    """Measured forward seconds of every layer (in layer order) for one micro-batch on one device kind
    (docs/design.md, "Per-layer times per device kind")."""

    kind: str
    forward_s: tuple[float, ...]


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
        if self.layer_times:
            result[LAYER_TIMES_KEY] = {entry.kind: dict(zip((layer.name for layer in self.layers), entry.forward_s))
                                       for entry in self.layer_times}
        return result


def load_problem(path: str | Path) -> Problem:
    """Read and validate an explicit problem file.

    Raises:
        InputError: the file is missing, binary, not JSON, or not a valid problem.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"cannot read problem file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise InputError(f"problem file {path} is not JSON text: byte {error.start} is not UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not JSON: {error.msg} at line {error.lineno}") from None
    return problem_from_dict(data)


def problem_from_dict(data: Any) -> Problem:
    """Validate a parsed explicit problem; every error names the field at fault."""
    if not isinstance(data, Mapping):
        raise InputError("problem must be a JSON object with layers, devices and setup")
    for key in ("layers", "devices", "setup"):
        if key not in data:
            raise InputError(f"problem is missing '{key}'")
    layers = tuple(_layer(item, f"layers[{i}]") for i, item in enumerate(_list(data, "layers")))
    devices = tuple(_device(item, f"devices[{i}]") for i, item in enumerate(_list(data, "devices")))
    setup = _setup(data["setup"])
    _check_unique([layer.name for layer in layers], "layer")
    _check_unique([device.name for device in devices], "device")
    _check_inputs(layers)
    _check_tied_groups(layers)
    layer_times = _layer_times(data.get(LAYER_TIMES_KEY), layers, devices)
    return Problem(layers=layers, devices=devices, setup=setup, layer_times=layer_times)


# --- field readers ---------------------------------------------------------


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data[key]
    if not isinstance(value, list):
        raise InputError(f"'{key}' must be a list")
    if not value:
        raise InputError(f"'{key}' is empty: a problem needs at least one")
    return value


def _object(item: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(item, Mapping):
        raise InputError(f"{where} must be a JSON object")
    return item


def _name(item: Mapping[str, Any], where: str) -> str:
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{where}.name must be a non-empty string")
    return name


def _number(item: Mapping[str, Any], key: str, where: str, positive: bool = False) -> float:
    if key not in item:
        raise InputError(f"{where} is missing '{key}'")
    value = item[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where}.{key} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        bound = "greater than 0" if positive else "0 or more"
        raise InputError(f"{where}.{key} must be {bound}, got {value!r}")
    return float(value)


def _integer(item: Mapping[str, Any], key: str, where: str, positive: bool = False) -> int:
    value = _number(item, key, where, positive)
    if value != int(value):
        raise InputError(f"{where}.{key} must be a whole number, got {item[key]!r}")
    return int(value)


def _layer(item: Any, where: str) -> Layer:
    item = _object(item, where)
    name = _name(item, where)
    where = f"layer '{name}'"
    inputs = item.get("inputs")
    if inputs is not None and (
        not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs)
    ):
        raise InputError(f"{where}.inputs must be a list of layer names")
    tied_group = item.get("tied_group")
    if tied_group is not None and not isinstance(tied_group, str):
        raise InputError(f"{where}.tied_group must be a string")
    layer = Layer(
        name=name,
        params=_integer(item, "params", where),
        flops=_number(item, "flops", where),
        activation_bytes=_integer(item, "activation_bytes", where),
        output_bytes=_integer(item, "output_bytes", where),
        tied_group=tied_group,
        tied_params=_integer(item, "tied_params", where) if "tied_params" in item else 0,
        inputs=tuple(inputs) if inputs is not None else None,
        frozen_bytes=_integer(item, "frozen_bytes", where) if "frozen_bytes" in item else 0,
        tied_frozen_bytes=_integer(item, "tied_frozen_bytes", where) if "tied_frozen_bytes" in item else 0,
        scratch_bytes=_integer(item, "scratch_bytes", where) if "scratch_bytes" in item else 0,
        work_flops=_number(item, "work_flops", where) if item.get("work_flops") is not None else None,
        transient_bytes=_integer(item, "transient_bytes", where) if "transient_bytes" in item else 0,
    )
    if layer.tied_params > layer.params:
        raise InputError(f"{where}.tied_params ({layer.tied_params}) exceeds its params ({layer.params})")
    if layer.tied_frozen_bytes > layer.frozen_bytes:
        raise InputError(f"{where}.tied_frozen_bytes ({layer.tied_frozen_bytes}) exceeds its frozen_bytes "
                         f"({layer.frozen_bytes})")
    return layer


# A device's budget is `memory_bytes` in the explicit problem format (docs/design.md), `budget_bytes` in
# the code; the other names a file may hold for the same fields, read as the format's.
_DEVICE_KEY_ALIASES = {"budget_bytes": "memory_bytes", "total_memory_bytes": "memory_total_bytes"}


def device_to_dict(device: Device) -> dict[str, Any]:
    """A device as the problem format and a run directory store it (budget under `memory_bytes`)."""
    return _device_dict(device)


def device_from_dict(item: Any, where: str = "device") -> Device:
    """A stored device, checked (raises InputError naming the field at fault)."""
    return _device(item, where)


def _device_dict(device: Device) -> dict[str, Any]:
    """A device in the explicit problem format: the budget under docs/design.md's key `memory_bytes`."""
    fields = _without_defaults(asdict(device), Device)
    return {("memory_bytes" if key == "budget_bytes" else key): value for key, value in fields.items()}


def _device(item: Any, where: str) -> Device:
    item = dict(_object(item, where))
    for alias, key in _DEVICE_KEY_ALIASES.items():
        if alias in item:
            item.setdefault(key, item.pop(alias))
    name = _name(item, where)
    where = f"device '{name}'"
    kind = item.get("kind", "")
    total = item.get("memory_total_bytes")
    device = Device(
        name=name,
        budget_bytes=_integer(item, "memory_bytes", where, positive=True),
        tflops=_number(item, "tflops", where, positive=True),
        bandwidth_gbps=_number(item, "bandwidth_gbps", where, positive=True),
        kind=kind if isinstance(kind, str) else "",
        memory_total_bytes=_integer(item, "memory_total_bytes", where, positive=True) if total is not None else None,
    )
    if device.memory_total_bytes is not None and device.budget_bytes > device.memory_total_bytes:
        raise InputError(
            f"{where}: budget {device.budget_bytes} bytes exceeds its memory of {device.memory_total_bytes} bytes"
        )
    return device


def _setup(item: Any) -> Setup:
    item = _object(item, "setup")
    mode = item.get("mode", "train")
    if mode not in MODES:
        raise InputError(f"setup.mode must be one of {', '.join(MODES)}, got {mode!r}")
    schedule = item.get("schedule", "1f1b")
    if schedule not in SCHEDULES:
        raise InputError(f"setup.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if "micro_batches" in item:
        micro_batches = _integer(item, "micro_batches", "setup")
        if micro_batches < 1:
            raise InputError(f"setup.micro_batches must be 1 or more, got {micro_batches}")
    else:
        micro_batches = 1
    recompute = item.get("recompute", False)
    if not isinstance(recompute, bool):
        raise InputError(f"setup.recompute must be true or false, got {recompute!r}")
    optional = {
        key: _number(item, key, "setup")
        for key in ("weight_bytes_per_param", "grad_bytes_per_param", "optimizer_bytes_per_param",
                    "optimizer_step_bytes_per_param")
        if item.get(key) is not None
    }
    tokens = item.get("tokens_per_micro_batch")
    data_parallel = item.get("data_parallel", 1)
    if data_parallel != AUTO and "data_parallel" in item:
        data_parallel = _integer(item, "data_parallel", "setup", positive=True)
    zero = _integer(item, "zero", "setup") if "zero" in item else 0
    finetune = item.get("finetune", "full")
    if finetune not in ("full", "lora", "qlora"):
        raise InputError(f"setup.finetune must be one of full, lora, qlora, got {finetune!r}")
    return Setup(
        mode=mode,
        bytes_per_param=_number(item, "bytes_per_param", "setup", positive=True),
        micro_batches=micro_batches,
        schedule=schedule,
        recompute=recompute,
        tokens_per_micro_batch=(
            _integer(item, "tokens_per_micro_batch", "setup", positive=True) if tokens is not None else None
        ),
        data_parallel=data_parallel,
        zero=zero,
        finetune=finetune,
        **optional,
    )


# --- cross-field checks ----------------------------------------------------


def _check_unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError(f"duplicate {what} name '{name}'")
        seen.add(name)


def _check_inputs(layers: tuple[Layer, ...]) -> None:
    """Inputs must name earlier layers: the layer list is in execution order."""
    earlier: set[str] = set()
    for layer in layers:
        for source in layer.inputs or ():
            if source not in earlier:
                raise InputError(
                    f"layer '{layer.name}' reads '{source}', which is not an earlier layer"
                )
        earlier.add(layer.name)


def _layer_times(table: Any, layers: tuple[Layer, ...], devices: tuple[Device, ...]) -> tuple[KindTimes, ...]:
    """The optional per-layer time table: every kind a device's kind, every layer timed, times finite and >= 0."""
    if table is None:
        return ()
    if not isinstance(table, Mapping):
        raise InputError(f"'{LAYER_TIMES_KEY}' must be an object of device kinds, each an object of layer times")
    kinds = {device.kind for device in devices if device.kind}
    names = [layer.name for layer in layers]
    result = []
    for kind, times in table.items():
        where = f"{LAYER_TIMES_KEY}['{kind}']"
        if kind not in kinds:
            raise InputError(f"{where}: no device has kind '{kind}' (kinds: {', '.join(sorted(kinds)) or 'none'})")
        if not isinstance(times, Mapping):
            raise InputError(f"{where} must be an object of layer name: forward seconds")
        for name in times:
            if name not in names:
                raise InputError(f"{where} times layer '{name}', which is not a layer")
        missing = [name for name in names if name not in times]
        if missing:
            raise InputError(f"{where} has no time for layer '{missing[0]}': a kind's table times every layer")
        result.append(KindTimes(kind, tuple(_number(times, name, where) for name in names)))
    return tuple(result)


def _check_tied_groups(layers: tuple[Layer, ...]) -> None:
    sizes: dict[str, int] = {}
    for layer in layers:
        if layer.tied_group is None:
            continue
        size = sizes.setdefault(layer.tied_group, layer.tied_params)
        if size != layer.tied_params:
            raise InputError(
                f"tied group '{layer.tied_group}' has tied_params {size} and {layer.tied_params}"
            )


def _without_defaults(values: dict[str, Any], cls: Any, keep: tuple[str, ...] = ()) -> dict[str, Any]:
    defaults = cls.__dataclass_fields__
    result = {}
    for key, value in values.items():
        default = defaults[key].default
        if key in keep or key == "name" or value != default:
            result[key] = list(value) if isinstance(value, tuple) else value
    return result

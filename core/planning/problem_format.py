"""Reading the explicit problem format (docs/design.md, "The explicit problem format"): a file or
parsed JSON into core.planning.problem's dataclasses, each malformed field one InputError line that
names it. Writing stays beside the dataclasses (Problem.to_dict, device_to_dict).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.planning.problem import (
    _DEVICE_KEY_ALIASES,
    AUTO,
    LAYER_TIMES_KEY,
    MODES,
    SCHEDULES,
    WEIGHT_BACKWARD_KEY,
    Device,
    KindTimes,
    Layer,
    Problem,
    Setup,
)


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
    if layers and layers[0].joins_previous:
        raise InputError(f"layer '{layers[0].name}'.joins_previous: the first layer has no layer before it")
    layer_times = _layer_times(data.get(LAYER_TIMES_KEY), layers, devices)
    weights = {entry.kind: entry.forward_s for entry in _layer_times(data.get(WEIGHT_BACKWARD_KEY), layers, devices,
                                                                      WEIGHT_BACKWARD_KEY)}
    for kind in weights:
        if kind not in {entry.kind for entry in layer_times}:
            raise InputError(f"{WEIGHT_BACKWARD_KEY}['{kind}'] needs the kind's forward times in '{LAYER_TIMES_KEY}'")
    layer_times = tuple(replace(entry, weight_backward_s=weights.get(entry.kind, ())) for entry in layer_times)
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


def _boolean(item: Mapping[str, Any], key: str, where: str) -> bool:
    value = item[key]
    if not isinstance(value, bool):
        raise InputError(f"{where}.{key} must be true or false, got {value!r}")
    return value


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
        joins_previous=_boolean(item, "joins_previous", where) if "joins_previous" in item else False,
        pending_grad_bytes=_integer(item, "pending_grad_bytes", where) if "pending_grad_bytes" in item else 0,
        recomputed_bytes=_integer(item, "recomputed_bytes", where) if "recomputed_bytes" in item else 0,
    )
    if layer.tied_params > layer.params:
        raise InputError(f"{where}.tied_params ({layer.tied_params}) exceeds its params ({layer.params})")
    if layer.tied_frozen_bytes > layer.frozen_bytes:
        raise InputError(f"{where}.tied_frozen_bytes ({layer.tied_frozen_bytes}) exceeds its frozen_bytes "
                         f"({layer.frozen_bytes})")
    return layer


def device_from_dict(item: Any, where: str = "device") -> Device:
    """A stored device, checked (raises InputError naming the field at fault)."""
    return _device(item, where)


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
    tensor_parallel = item.get("tensor_parallel", 1)
    if tensor_parallel != AUTO and "tensor_parallel" in item:
        tensor_parallel = _integer(item, "tensor_parallel", "setup", positive=True)
    sizes = item.get("tensor_parallel_sizes", [1, 2, 4, 8])
    if not isinstance(sizes, list) or not all(isinstance(size, int) and not isinstance(size, bool) for size in sizes):
        raise InputError(f"setup.tensor_parallel_sizes must be a list of whole numbers, got {sizes!r}")
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
        tensor_parallel=tensor_parallel,
        tensor_parallel_sizes=tuple(sizes),
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


def _layer_times(table: Any, layers: tuple[Layer, ...], devices: tuple[Device, ...],
                 key: str = LAYER_TIMES_KEY) -> tuple[KindTimes, ...]:
    """The optional per-layer time table: every kind a device's kind, every layer timed, times finite and >= 0."""
    if table is None:
        return ()
    if not isinstance(table, Mapping):
        raise InputError(f"'{key}' must be an object of device kinds, each an object of layer times")
    kinds = {device.kind for device in devices if device.kind}
    names = [layer.name for layer in layers]
    result = []
    for kind, times in table.items():
        where = f"{key}['{kind}']"
        if kind not in kinds:
            raise InputError(f"{where}: no device has kind '{kind}' (kinds: {', '.join(sorted(kinds)) or 'none'})")
        if not isinstance(times, Mapping):
            raise InputError(f"{where} must be an object of layer name: seconds")
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

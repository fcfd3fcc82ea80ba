"""The real accelerate: infer_auto_device_map on the model, costed like any plan.

Also exports a plan as a device_map that transformers' from_pretrained
accepts. accelerate and transformers are optional (the `hf` extra).
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from core import REPO_ROOT
from core.errors import InputError
from core.model.model_spec import ModelSpec
from core.planning.baselines import weight_bytes_per_param
from core.planning.costs import infeasible_plan, plan_from_placement
from core.planning.plan import FEASIBLE, Plan
from core.planning.problem import Problem

# What accelerate's answer is computed by: a change invalidates its disk cache entries.
_PLACING_CODE = ("core/planning/accelerate_baseline.py", "core/model/module_tree.py", "core/model/hf.py",
                 "core/model/gpt.py", "core/model/measure.py")


def solve_accelerate(problem: Problem, spec: ModelSpec | None) -> Plan:
    """Place the model with accelerate.infer_auto_device_map under the budgets.

    Raises:
        InputError: accelerate is missing, or no model was given (explicit problems).
    """
    if spec is None:
        raise InputError("the accelerate baseline needs a model, not an explicit problem")
    names = [layer.name for layer in problem.layers]
    placed, elapsed = _placement(problem, spec)
    offloaded = [name for name, device in placed.items() if not isinstance(device, int)]
    if offloaded:
        return infeasible_plan(problem, "accelerate", (
            f"accelerate offloads {len(offloaded)} layers from '{offloaded[0]}' on to CPU or disk: "
            "they do not fit the budgets"), elapsed)
    order: list[int] = []
    for name in names:
        if placed[name] not in order:
            order.append(placed[name])
    placement = [(d, [i for i, name in enumerate(names) if placed[name] == d]) for d in order]
    return plan_from_placement(problem, placement, "accelerate", FEASIBLE, elapsed, zero=0)


# Placements started in another process by place_in_background, by cache entry; how it is started.
_IN_BACKGROUND: dict[str, subprocess.Popen[bytes]] = {}
_BACKGROUND_WAIT_S = 300.0
_PLACING_PROCESS = ("-m", "core.planning.accelerate_baseline")
_ASKED: set[tuple[object, ...]] = set()  # what place_in_background was asked for already, in this process


def place_in_background(problem: Problem, spec: ModelSpec | None) -> None:
    """Start accelerate's placement in another process where it is not cached, so that
    importing torch and accelerate (seconds) overlaps the solve; solve_accelerate takes its answer
    from the cache. Nothing starts for explicit problems, where the cache is bypassed, or where
    this process has imported torch already (it measured the model: placing here costs less)."""
    from core.system.disk_cache import entry_path, is_bypassed, read_entry

    if spec is None or is_bypassed() or _torch_imported():
        return
    asked = (spec, weight_bytes_per_param(problem), tuple(device.budget_bytes for device in problem.devices),
             tuple(layer.name for layer in problem.layers))
    if asked in _ASKED:  # a plan solves many problems of one model and budgets (every b, t, schedule)
        return
    _ASKED.add(asked)
    key = _cache_key(problem, spec)
    entry = str(entry_path("accelerate", key))
    if entry in _IN_BACKGROUND or _stored(read_entry("accelerate", key), key) is not None:
        return
    request = {field: key[field] for field in ("model", "weight_bytes", "max_memory", "layers")}
    try:  # where it cannot start or dies at once, solve_accelerate places here
        worker = subprocess.Popen([sys.executable, *_PLACING_PROCESS], cwd=REPO_ROOT,
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert worker.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            worker.stdin.write(json.dumps(request).encode())
        with contextlib.suppress(BrokenPipeError):
            worker.stdin.close()
    except OSError:
        return
    _IN_BACKGROUND[entry] = worker


def _torch_imported() -> bool:
    return "torch" in sys.modules


def _placement(problem: Problem, spec: ModelSpec) -> tuple[dict[str, Any], float]:
    """Each layer's device as accelerate places it, and the seconds that took.

    The answer depends only on the model, its dtype and the budgets: it is kept
    in the disk cache (core.system.disk_cache), so a repeated plan needs no torch;
    a placement started by place_in_background is waited for.
    """
    from core.system.disk_cache import entry_path, read_entry

    key = _cache_key(problem, spec)
    worker = _IN_BACKGROUND.pop(str(entry_path("accelerate", key)), None)
    if worker is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(_BACKGROUND_WAIT_S)
    stored = _stored(read_entry("accelerate", key), key)
    if stored is not None:
        return stored
    return _place(spec, key)


def _cache_key(problem: Problem, spec: ModelSpec) -> dict[str, Any]:
    return _request_key({"model": spec.identity(), "weight_bytes": weight_bytes_per_param(problem),
                         "max_memory": [device.budget_bytes for device in problem.devices],
                         "layers": [layer.name for layer in problem.layers]})


def _request_key(request: dict[str, Any]) -> dict[str, Any]:
    """What accelerate's answer depends on: the request, and the versions that compute it."""
    from core.system.disk_cache import code_version, package_versions

    return {**request, "versions": {**package_versions("torch", "transformers", "accelerate"),
                                    "allot": code_version(*_PLACING_CODE)}}


def _stored(value: Any, key: dict[str, Any]) -> tuple[dict[str, Any], float] | None:
    if isinstance(value, dict) and isinstance(value.get("placed"), dict) and set(value["placed"]) == set(key["layers"]):
        return value["placed"], float(value.get("elapsed_s", 0.0))
    return None


def _place(spec: ModelSpec, key: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Run accelerate.infer_auto_device_map as `key` asks and keep its answer under it."""
    from core.system.disk_cache import write_entry

    try:
        from accelerate import infer_auto_device_map
    except ImportError:
        raise InputError("the accelerate baseline needs accelerate: python3 -m pip install -e '.[hf]'") from None
    started = time.perf_counter()
    model, block_class = _meta_model(spec, key["weight_bytes"])
    with _quiet("accelerate.utils.modeling"):  # it warns that the planned GPUs are not in this machine
        device_map = infer_auto_device_map(model, max_memory=dict(enumerate(key["max_memory"])),
                                           no_split_module_classes=[block_class])
    elapsed = time.perf_counter() - started
    placed = {name: _device_of(name, device_map) for name in key["layers"]}
    write_entry("accelerate", key, {"placed": placed, "elapsed_s": elapsed})
    return placed, elapsed


def export_device_map(spec: ModelSpec, plan: Plan, problem: Problem) -> dict[str, Any]:
    """A device_map for from_pretrained: module name -> GPU index or "cpu".

    Discovered GPUs keep their CUDA index; the host is "cpu"; simulated GPUs
    take their position among the problem's GPUs (the box being planned).
    Modules without parameters (rotary tables) follow the first stage.
    """
    if not plan.stages:
        raise InputError(f"no plan to export: {plan.reason}")
    if plan.data_parallel > 1:
        raise InputError(f"an accelerate device_map places one copy of the model, but this plan runs "
                         f"{plan.data_parallel} replicas (data parallel): export the torchrun commands instead")
    target = _export_targets(problem)
    device_map: dict[str, Any] = {}
    for stage in plan.stages:
        for layer in stage.layers:
            device_map[layer] = target[stage.device]
    first = target[plan.stages[0].device]
    model, _ = _meta_model(spec, 2.0)
    for name, _module in model.named_modules():
        if name and not any(_covers(name, key) or _covers(key, name) for key in device_map):
            if not any(True for _ in _module.children()):
                device_map[name] = first
    return device_map


def _export_targets(problem: Problem) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    gpu_position = 0
    for device in problem.devices:
        if device.name.startswith("cuda:"):
            targets[device.name] = int(device.name.split(":")[1])
        elif device.kind == "cpu":
            targets[device.name] = "cpu"
        else:
            targets[device.name] = gpu_position
            gpu_position += 1
    return targets


def _meta_model(spec: ModelSpec, weight_bytes: float) -> tuple[Any, str]:
    import torch

    dtype = torch.bfloat16 if weight_bytes <= 2 else torch.float32
    if spec.gpt is not None:
        from core.model.gpt import GPT, Block

        with torch.device("meta"):
            return GPT(spec.gpt).to(dtype), Block.__name__
    from core.model.module_tree import placeable_hf_model

    return placeable_hf_model(spec, dtype)


def _device_of(layer: str, device_map: dict[str, Any]) -> Any:
    """The device accelerate gave a layer: its own entry or its nearest ancestor's."""
    best = None
    for key, device in device_map.items():
        if _covers(key, layer) and (best is None or len(key) > len(best[0])):
            best = (key, device)
    if best is None:  # split below the layer: all parts must agree
        parts = {repr(d) for k, d in device_map.items() if _covers(layer, k)}
        values = [d for k, d in device_map.items() if _covers(layer, k)]
        return values[0] if len(parts) == 1 else "split"
    return best[1]


def _covers(prefix: str, name: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _place_request() -> None:
    """The process place_in_background starts: a request as JSON on stdin, the answer to the cache."""
    request = json.loads(sys.stdin.read())
    _place(ModelSpec.from_identity(request["model"]), _request_key(request))


if __name__ == "__main__":
    _place_request()

"""GPUs a project planned on that this machine does not have, and simulated stand-ins for them.

A project saved on an 8-GPU box (or with `--fake-gpus 8`) and opened on a
laptop loses those GPUs: core.project.merge_saved_devices leaves them out.
These helpers say which ones, grouped by kind for one readable line, and make
simulated catalog GPUs of the same kind with the saved budgets and ticks, so
the plan can still be looked at.
"""

from __future__ import annotations

from dataclasses import replace

from core.devices.catalog import load_catalog
from core.project import DeviceEntry, simulated_entry


def missing_devices(saved: tuple[DeviceEntry, ...], available: tuple[DeviceEntry, ...]) -> tuple[DeviceEntry, ...]:
    """The saved GPUs (not simulated ones, not the host) that this machine lacks, in saved order."""
    here = {entry.name for entry in available}
    return tuple(entry for entry in saved if entry.kind == "gpu" and entry.name not in here)


def describe_missing(missing: tuple[DeviceEntry, ...]) -> str:
    """'cuda:0, cuda:1 (H100-SXM) and cuda:2 (unknown kind) are not on this machine'."""
    groups: dict[str, list[str]] = {}
    for entry in missing:
        groups.setdefault(entry.catalog_name or "unknown kind", []).append(entry.name)
    parts = [f"{', '.join(names)} ({kind})" for kind, names in groups.items()]
    verb = "is" if len(missing) == 1 else "are"
    return f"{' and '.join(parts)} {verb} not on this machine"


def stand_in_offer(missing: tuple[DeviceEntry, ...]) -> str | None:
    """The button's words, e.g. 'Plan on 8 simulated H100-SXM'; None when no kind is known."""
    kinds: dict[str, int] = {}
    for kind in filter(None, map(_catalog_kind, missing)):
        kinds[kind] = kinds.get(kind, 0) + 1
    if not kinds:
        return None
    return "Plan on " + " and ".join(f"{count} simulated {kind}" for kind, count in kinds.items())


def stand_ins(missing: tuple[DeviceEntry, ...], taken: set[str]) -> tuple[DeviceEntry, ...]:
    """Simulated GPUs of the missing ones' kinds, with their budgets (at most the card) and ticks."""
    result: list[DeviceEntry] = []
    names = set(taken)
    for entry in missing:
        kind = _catalog_kind(entry)
        if kind is None:
            continue
        simulated = simulated_entry(kind, names)
        simulated = replace(simulated, budget_bytes=max(1, min(entry.budget_bytes, simulated.memory_total_bytes)),
                            included=entry.included)
        names.add(simulated.name)
        result.append(simulated)
    return tuple(result)


def _catalog_kind(entry: DeviceEntry) -> str | None:
    if entry.catalog_name is None:
        return None
    gpu = load_catalog().find(entry.catalog_name)
    return gpu.name if gpu is not None else None

"""A project's GPUs this machine lacks: named by kind, and simulated stand-ins offered."""

from __future__ import annotations

from core.devices.stand_ins import describe_missing, missing_devices, stand_in_offer, stand_ins
from core.project import (
    DeviceEntry,
    Project,
    merge_saved_devices,
    project_from_dict,
    project_to_dict,
)

GiB = 1024**3


def saved_gpu(index: int, catalog: str | None = "H100-SXM", budget_gib: int = 40, included: bool = True) -> DeviceEntry:
    return DeviceEntry(name=f"cuda:{index}", kind="gpu", memory_total_bytes=80 * GiB, budget_bytes=budget_gib * GiB,
                       included=included, catalog_name=catalog)


HOST = DeviceEntry(name="cpu", kind="host", memory_total_bytes=16 * GiB, budget_bytes=8 * GiB, included=False)


def test_a_gpus_kind_is_saved_with_the_project_and_read_back():
    project = Project(devices=(saved_gpu(0), saved_gpu(1, catalog=None), HOST))
    data = project_to_dict(project)
    assert data["devices"][0]["catalog"] == "H100-SXM" and "catalog" not in data["devices"][1]
    loaded = project_from_dict(data)
    assert [entry.catalog_name for entry in loaded.devices] == ["H100-SXM", None, None]


def test_missing_gpus_are_named_by_kind_and_get_stand_ins_with_their_budgets():
    saved = (saved_gpu(0), saved_gpu(1, budget_gib=90, included=False), saved_gpu(2, catalog=None), HOST)
    here = (HOST,)  # a laptop: the host only
    merged, notes = merge_saved_devices(saved, here)
    assert [entry.name for entry in merged] == ["cpu"] and notes == []
    missing = missing_devices(saved, here)
    assert [entry.name for entry in missing] == ["cuda:0", "cuda:1", "cuda:2"]
    assert describe_missing(missing) == "cuda:0, cuda:1 (H100-SXM) and cuda:2 (unknown kind) are not on this machine"
    assert stand_in_offer(missing) == "Plan on 2 simulated H100-SXM"
    added = stand_ins(missing, {"cpu"})
    assert [(e.name, e.kind, e.catalog_name, e.included) for e in added] == [
        ("H100-SXM", "simulated", "H100-SXM", True), ("H100-SXM#2", "simulated", "H100-SXM", False)]
    assert added[0].budget_bytes == 40 * GiB
    assert added[1].budget_bytes == added[1].memory_total_bytes  # 90 GiB saved: capped at the card


def test_nothing_to_offer_without_a_known_kind():
    missing = (saved_gpu(0, catalog=None),)
    assert stand_in_offer(missing) is None and stand_ins(missing, set()) == ()
    assert describe_missing(missing) == "cuda:0 (unknown kind) is not on this machine"

"""Where each planned device of a run executes, and how fast that is.

A simulated GPU (a catalog GPU entered by hand, or a stand-in for a missing
one) is planned with its datasheet speed but trains as a CPU process, so the
plan's prediction for it says nothing about the run. At preparation the
runner records, per device, what actually executes it and that executor's
speed: the host's measured matmul speed (core.devices.host_speed) shared
between the processes that run on it, or the profile's host measurement when
a profile calibrates the run. The report (core.training.report) predicts
simulated stages with it and keeps the datasheet prediction beside.

Stored in config.json as "execution": [{device, simulated, runs_on,
planned_tflops, run_tflops, source}, ...]. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from core.planning.front_door import torch_device_of
from core.planning.problem import Device

HOST = "cpu"


@dataclass(frozen=True)
class DeviceExecution:
    """One planned device during training.

    `simulated` names the GPU model a simulated device stands for (None for a
    discovered GPU or the host); `runs_on` is the torch device that executes it.
    `run_tflops` is the executor's speed where it differs from the plan's
    (`planned_tflops`), None where the plan's speed is the executor's or unknown.
    """

    device: str
    simulated: str | None
    runs_on: str
    planned_tflops: float
    run_tflops: float | None = None
    source: str = ""

    @property
    def on_host(self) -> bool:
        """A simulated device that the host CPU executes."""
        return self.simulated is not None and self.runs_on == HOST

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeviceExecution:
        run = data.get("run_tflops")
        return cls(device=str(data["device"]), simulated=_text(data.get("simulated")),
                   runs_on=str(data["runs_on"]), planned_tflops=float(data["planned_tflops"]),
                   run_tflops=None if run is None else float(run), source=str(data.get("source", "")))


def is_simulated(device: Device) -> bool:
    """A catalog GPU planned on paper: neither a discovered GPU (cuda:N) nor the host."""
    return torch_device_of(device.name) == HOST and device.kind != HOST


def plan_executions(devices: Sequence[Device], host_tflops: float | None, host_source: str) -> tuple[
        DeviceExecution, ...]:
    """Each device's executor; simulated ones run on the host at `host_tflops` (one process's share).

    Args:
        devices: the run's planner devices (after a profile, when one calibrates them).
        host_tflops: what one of the run's host processes achieves (effective
            TFLOP/s), or None when unknown.
        host_source: where `host_tflops` comes from, for the report.
    """
    return tuple(
        DeviceExecution(device=device.name, simulated=device.kind, runs_on=HOST, planned_tflops=device.tflops,
                        run_tflops=host_tflops, source=host_source if host_tflops is not None else "")
        if is_simulated(device) else
        DeviceExecution(device=device.name, simulated=None, runs_on=torch_device_of(device.name),
                        planned_tflops=device.tflops)
        for device in devices)


def executions_from_record(stored: Mapping[str, Any]) -> tuple[DeviceExecution, ...]:
    """A run's executions from its config.json; runs prepared before they were recorded
    still name their simulated devices (at an unknown host speed)."""
    recorded = stored.get("execution")
    if isinstance(recorded, list):
        return tuple(DeviceExecution.from_dict(item) for item in recorded)
    # only the facts that every version of the record holds (its budget field was renamed)
    devices = [Device(name=str(record["name"]), budget_bytes=0, tflops=float(record["tflops"]), bandwidth_gbps=0.0,
                      kind=str(record.get("kind", ""))) for record in stored.get("devices", [])]
    return plan_executions(devices, None, "")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)

"""Measured against predicted: each stage's time per micro-batch, from the plan
(the canonical cost model) and from the run's metrics; with data-parallel
replicas also each stage group's gradient sync per step; and each stage's
peak memory, the plan's against the tracked steps' (docs/design.md,
"Measured memory").

A stage on a simulated GPU trains on the host CPU (core.training.execution):
its prediction is then the host's (the same work at the host's speed), and
the plan's datasheet prediction for the simulated GPU is kept beside it.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from core.planning.plan import Plan, StageCost
from core.planning.schedules import SCHEDULE_NAMES, micro_batches_per_replica, schedule_named
from core.training.execution import DeviceExecution

WARMUP_STEPS = 2  # the first steps include one-off costs (allocations, shape inference)


@dataclass(frozen=True)
class StageReport:
    """One stage: compute per micro-batch predicted and measured; idle and sync per step.

    `predicted_compute_s` is for what actually executes the stage; where that is
    the host standing in for a simulated GPU (`simulated` names the GPU),
    `datasheet_compute_s` is the plan's prediction for the GPU itself.
    """

    stage: int
    devices: tuple[str, ...]  # the stage's group, replica order
    layers: int
    predicted_compute_s: float | None
    predicted_time_s: float | None  # compute + the modelled communication
    measured_compute_s: float | None
    measured_idle_s_per_step: float | None
    predicted_sync_s: float | None  # None: no replicas to synchronise
    measured_sync_s: float | None
    simulated: str | None = None
    datasheet_compute_s: float | None = None
    prediction_source: str = "the plan"
    predicted_memory_bytes: float | None = None  # the plan's stage memory (core.planning.plan.StageCost)
    measured_peak_memory_bytes: int | None = None  # None: no tracked step in the metrics
    measured_memory_source: str | None = None  # "tensors" (CPU: live tensor bytes) or "cuda" (allocator)
    budget_bytes: int | None = None

    @property
    def device(self) -> str:
        return self.devices[0]

    @property
    def group(self) -> str:
        """The stage's device, or its group of devices (one per replica)."""
        return " + ".join(self.devices)

    @property
    def measured_over_predicted(self) -> float | None:
        measured, predicted = self.measured_compute_s, self.predicted_compute_s
        return measured / predicted if measured and predicted else None

    @property
    def memory_measured_over_predicted(self) -> float | None:
        measured, predicted = self.measured_peak_memory_bytes, self.predicted_memory_bytes
        return measured / predicted if measured and predicted else None

    @property
    def runs_on_note(self) -> str | None:
        """'runs on host CPU (simulated A100-80GB)' where the host stands in; None: it runs as planned."""
        return None if self.simulated is None else f"runs on host CPU (simulated {self.simulated})"


@dataclass(frozen=True)
class RunReport:
    """Every stage's report, and the step: predicted (for what runs) and measured.

    `datasheet_step_s` is the plan's step time where simulated GPUs run on the
    host (None otherwise: the prediction is the plan's).
    """

    stages: tuple[StageReport, ...]
    steps_measured: int
    predicted_step_s: float | None
    measured_step_s: float | None
    datasheet_step_s: float | None = None
    predicted_bubble: float | None = None  # mean over ranks of idle / step (bubble_fractions)
    measured_bubble: float | None = None
    tensor_parallel: int = 1  # t: each stage on a group of t devices (the plan's; its first device named)
    chunks: int = 1  # v: stages a device runs (chunked schedules), whose memory is the device's

    def memory_rows(self) -> tuple[StageReport, ...]:
        """The stages whose memory fields to show: every stage, or under a chunked schedule each
        device's first chunk (carrying the device's figures)."""
        if self.chunks == 1:
            return self.stages
        return tuple(self.stages[i] for i in first_chunk_of_each_device([s.devices for s in self.stages]))

    @property
    def step_measured_over_predicted(self) -> float | None:
        measured, predicted = self.measured_step_s, self.predicted_step_s
        return measured / predicted if measured and predicted else None

    @property
    def synced(self) -> bool:
        """A data-parallel run: some stage has a group to synchronise."""
        return any(s.predicted_sync_s is not None or s.measured_sync_s is not None for s in self.stages)

    @property
    def simulated(self) -> tuple[str, ...]:
        """The simulated GPU models the host stands in for, in stage order, once each."""
        return tuple(dict.fromkeys(s.simulated for s in self.stages if s.simulated is not None))

    def to_dict(self) -> dict[str, Any]:
        """report.json: the fields, plus the ratios a reader wants without arithmetic."""
        answer = asdict(self)
        answer["step_measured_over_predicted"] = self.step_measured_over_predicted
        for stage, record in zip(self.stages, answer["stages"]):
            record["measured_over_predicted"] = stage.measured_over_predicted
            record["memory_measured_over_predicted"] = stage.memory_measured_over_predicted
            record["runs_on"] = stage.runs_on_note
        return answer


def first_chunk_of_each_device(groups: Sequence[tuple[str, ...]]) -> list[int]:
    """The index of each device's (group's) first stage: under a chunked schedule a device's memory
    figures are its chunks' together, carried by each chunk and shown once."""
    seen: set[tuple[str, ...]] = set()
    first = []
    for index, group in enumerate(groups):
        if tuple(group) not in seen:
            seen.add(tuple(group))
            first.append(index)
    return first


def engine_memory_bytes(stage: StageCost, engine: str) -> float:
    """A stage's predicted peak as the engine runs it (docs/design.md, "Measured memory"): the pipeline
    engine as planned; the local engine runs each micro-batch through every stage before the next, so a
    stage holds one micro-batch's activations and no send or receive buffers."""
    if engine != "local" or stage.inflight_micro_batches < 1:
        return stage.memory_bytes
    one = stage.activation_bytes / stage.inflight_micro_batches
    return replace(stage, activation_bytes=one, inflight_micro_batches=1, buffer_bytes=0.0).memory_bytes


def stage_memory_bytes(plan: Plan, engine: str) -> tuple[tuple[float, int], ...]:
    """Each stage's (predicted peak as the engine holds it, budget). Under a chunked schedule a device
    holds all its chunks at once and its measured peak is theirs together, so each chunk carries its
    device's total and the device's budget (docs/design.md, "Chunked schedules")."""
    own = [engine_memory_bytes(stage, engine) for stage in plan.stages]
    answer = [(memory, stage.budget_bytes) for memory, stage in zip(own, plan.stages)]
    for position in range(plan.ranks_per_replica) if plan.chunks > 1 else ():
        chunks = plan.stages_of_rank(position)
        total = sum(own[index] for index in chunks)
        # a chunk's budget is its device's less the device's other chunks (core.planning.chunked_costs)
        first = plan.stages[chunks[0]]
        budget = int(first.budget_bytes + sum(plan.stages[index].memory_bytes for index in chunks[1:]))
        for index in chunks:
            answer[index] = (total, budget)
    return tuple(answer)


def stage_report(plan: Plan, rows: Sequence[Mapping[str, Any]], micro_batches: int,
                 executions: Sequence[DeviceExecution] = (), schedule: str = SCHEDULE_NAMES[0],
                 engine: str = "pipeline") -> RunReport:
    """Predicted vs measured per stage, medians over the steps after warmup.

    Measured compute per micro-batch is the stage's forward + backward time of
    a step divided by the micro-batches each replica runs (m / d); the
    prediction is the plan's compute_s, or for a stage whose devices are
    simulated GPUs executed by the host, the same work at the host's speed
    (`executions`). Sync is per step: the plan's sync_s against the measured
    gradient reduction of the stage's group (None without replicas). The
    step on the host is priced by the run's `schedule` (core.planning.schedules), and memory as
    the run's `engine` holds it (`engine_memory_bytes`).
    """
    usable = [row for row in rows if "stage_compute_s" in row][WARMUP_STEPS:] or list(rows)
    per_replica = micro_batches_per_replica(micro_batches, plan.data_parallel)
    by_device = {execution.device: execution for execution in executions}
    memory: Mapping[str, Any] = next((row for row in reversed(rows) if "stage_measured_peak_memory_bytes" in row), {})
    stages = []
    for index, (stage, (predicted, budget)) in enumerate(zip(plan.stages, stage_memory_bytes(plan, engine))):
        compute = _median(index, "stage_compute_s", usable)
        report = _stage(index, stage, [by_device[d] for d in stage.devices if d in by_device],
                        compute / per_replica if compute is not None else None,
                        _median(index, "stage_idle_s", usable), _median(index, "stage_sync_s", usable))
        stages.append(replace(report, predicted_memory_bytes=predicted, budget_bytes=budget,
                              **_memory(index, memory)))
    step_times = [row["step_time_s"] for row in usable if "step_time_s" in row]
    simulated = any(stage.simulated is not None for stage in stages)
    predicted_step = _host_step_s(plan, stages, micro_batches, schedule) if simulated else plan.objective_s
    measured_step = statistics.median(step_times) if step_times else None
    predicted_bubble, measured_bubble = bubble_fractions(plan, stages, per_replica, predicted_step, measured_step)
    return RunReport(stages=tuple(stages), steps_measured=len(usable), predicted_step_s=predicted_step,
                     measured_step_s=measured_step, datasheet_step_s=plan.objective_s if simulated else None,
                     predicted_bubble=predicted_bubble, measured_bubble=measured_bubble,
                     tensor_parallel=plan.tensor_parallel, chunks=plan.chunks)


def bubble_fractions(plan: Plan, stages: Sequence[StageReport], per_replica: int, predicted_step_s: float | None,
                     measured_step_s: float | None) -> tuple[float | None, float | None]:
    """(predicted, measured) bubble: the mean over the ranks of the share of a step each waits.

    A rank (one per stage, or per v chunks under a chunked schedule) is busy m' times the
    compute of its stages per micro-batch; predicted idle is the predicted step less that,
    measured idle is the step's wall time less the forward/backward time it recorded
    (metrics' stage_idle_s: sends, waits, the optimizer step) (docs/design.md, "Chunked schedules").
    """
    ranks = [plan.stages_of_rank(position) for position in range(plan.ranks_per_replica)]
    busy = [[stages[index].predicted_compute_s for index in indices] for indices in ranks]
    predicted = None
    if predicted_step_s and all(time is not None for times in busy for time in times):
        predicted = statistics.mean(max(0.0, 1 - per_replica * sum(t for t in times if t is not None)
                                        / predicted_step_s) for times in busy)
    idle = [stages[indices[0]].measured_idle_s_per_step for indices in ranks]
    measured = None
    if measured_step_s and all(value is not None for value in idle):
        measured = statistics.mean(min(1.0, (value or 0.0) / measured_step_s) for value in idle)
    return predicted, measured


def _stage(index: int, stage: StageCost, executions: Sequence[DeviceExecution], measured: float | None,
           idle: float | None, sync: float | None) -> StageReport:
    """One stage's report; predicted on the host where the host executes simulated devices."""
    hosted = [execution for execution in executions if execution.on_host]
    simulated = " + ".join(dict.fromkeys(e.simulated for e in hosted if e.simulated)) or None
    predicted: float | None = stage.compute_s
    source = "the plan"
    if simulated is not None:
        # the stage's work at the slowest planned member, run at the slowest executor
        planned = min(e.planned_tflops for e in hosted)
        speeds = [e.run_tflops for e in hosted]
        known = [speed for speed in speeds if speed is not None]
        predicted = stage.compute_s * planned / min(known) if len(known) == len(speeds) and known else None
        source = hosted[0].source or "unknown: the host's speed was not recorded for this run"
    return StageReport(
        stage=index, devices=stage.devices, layers=len(stage.layers), predicted_compute_s=predicted,
        predicted_time_s=None if predicted is None else predicted + stage.comm_s, measured_compute_s=measured,
        measured_idle_s_per_step=idle, predicted_sync_s=stage.sync_s if len(stage.devices) > 1 else None,
        measured_sync_s=sync, simulated=simulated,
        datasheet_compute_s=stage.compute_s if simulated is not None else None, prediction_source=source,
        predicted_memory_bytes=stage.memory_bytes, budget_bytes=stage.budget_bytes)


def _memory(index: int, row: Mapping[str, Any]) -> dict[str, Any]:
    """A stage's measured peak and its source from the last row that carries them (the tracked
    steps' figure, core.training.engine.memory_tracker); nothing where none does."""
    peaks, sources = row.get("stage_measured_peak_memory_bytes", []), row.get("stage_measured_memory_source", [])
    if index >= len(peaks):
        return {}
    return {"measured_peak_memory_bytes": int(peaks[index]),
            "measured_memory_source": str(sources[index]) if index < len(sources) else None}


def _host_step_s(plan: Plan, stages: Sequence[StageReport], micro_batches: int, schedule: str) -> float | None:
    """The canonical step time with each stage's time as it runs (None if one is unknown)."""
    times = [stage.predicted_time_s for stage in stages]
    if any(time is None for time in times):
        return None
    return schedule_named(schedule).step_time_s([time for time in times if time is not None], micro_batches,
                                                plan.data_parallel, [stage.sync_s for stage in plan.stages])


def _median(index: int, key: str, rows: Sequence[Mapping[str, Any]]) -> float | None:
    values = [row[key][index] for row in rows if index < len(row.get(key, []))]
    return statistics.median(values) if values else None


def format_report(report: RunReport) -> str:
    """The report as a small table (compute in ms per micro-batch, idle and sync per step).

    Stages that the host runs for a simulated GPU say so, with the plan's
    datasheet prediction in its own column.
    """
    hosted = bool(report.simulated)
    lines = ["stage  device           layers  predicted ms  measured ms  measured/predicted  idle ms/step"
             + ("  sync ms/step predicted  measured" if report.synced else "")
             + ("  datasheet ms  note" if hosted else "")]
    for stage in report.stages:
        sync = (f"  {_ms(stage.predicted_sync_s):>22}  {_ms(stage.measured_sync_s):>8}" if report.synced else "")
        note = f"  {_ms(stage.datasheet_compute_s):>12}  {stage.runs_on_note or 'as planned'}" if hosted else ""
        lines.append(
            f"{stage.stage:>5}  {'+'.join(stage.devices):<15}  {stage.layers:>6}  "
            f"{_ms(stage.predicted_compute_s):>12}  {_ms(stage.measured_compute_s):>11}  "
            f"{_ratio(stage.measured_over_predicted):>18}  {_ms(stage.measured_idle_s_per_step):>12}" + sync + note
        )
    datasheet = f" (datasheet {_ms(report.datasheet_step_s)} ms)" if hosted else ""
    lines.append(f"step: predicted {_ms(report.predicted_step_s)} ms{datasheet}, measured "
                 f"{_ms(report.measured_step_s)} ms ({_ratio(report.step_measured_over_predicted)}) "
                 f"over {report.steps_measured} steps")
    lines.append(f"bubble (mean share of a step a rank waits): predicted {_percent(report.predicted_bubble)}, "
                 f"measured {_percent(report.measured_bubble)}")
    if report.tensor_parallel > 1:
        lines.append(f"tensor parallel: each stage split over {report.tensor_parallel} devices, named by the "
                     "first; predicted per device of a group (docs/design.md, \"Tensor parallelism\")")
    if hosted:
        source = next(s.prediction_source for s in report.stages if s.simulated is not None)
        lines.append(f"simulated {', '.join(report.simulated)} ran on the host CPU: predicted ms is for the host, "
                     f"from {source}; datasheet ms: predicted on {', '.join(report.simulated)} (datasheet)")
    return "\n".join(lines + format_memory(report))


def format_memory(report: RunReport) -> list[str]:
    """Peak memory per stage, predicted against measured (empty when nothing was measured)."""
    if not any(stage.measured_peak_memory_bytes is not None for stage in report.stages):
        return []
    if report.chunks > 1:
        lines = ["device memory MiB, its chunks together: predicted  measured peak  measured/predicted  budget  "
                 "measured as"]
        for stage in report.memory_rows():
            lines.append(f"{stage.group:<15}  {_mib(stage.predicted_memory_bytes):>32}  "
                         f"{_mib(stage.measured_peak_memory_bytes):>13}  "
                         f"{_ratio(stage.memory_measured_over_predicted):>18}  {_mib(stage.budget_bytes):>6}  "
                         f"{stage.measured_memory_source or '-'}")
        return lines
    lines = ["stage  memory MiB: predicted  measured peak  measured/predicted  budget  measured as"]
    for stage in report.stages:
        lines.append(f"{stage.stage:>5}  {_mib(stage.predicted_memory_bytes):>21}  "
                     f"{_mib(stage.measured_peak_memory_bytes):>13}  "
                     f"{_ratio(stage.memory_measured_over_predicted):>18}  {_mib(stage.budget_bytes):>6}  "
                     f"{stage.measured_memory_source or '-'}")
    return lines


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.2f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"

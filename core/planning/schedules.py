"""Pipeline schedules: the one place the cost model's schedule-dependent terms live.

A schedule decides, for a step of m micro-batches on d data-parallel replicas
(m' = m / d each) over S stages, how many micro-batches' activations a stage
holds at once, and how the stage times t_s add up to the step time:
T = sum_s t_s + w * max_s t_s + max_s sync_s, where w, the bubble weight, is
m' - 1 for GPipe and 1F1B (docs/design.md, the cost model). Every solver,
baseline and report asks the schedule for these: the exact DP and the hybrid
solver weigh their stage-time cap by `bubble_weight`, the MILP takes it as the
objective coefficient of its slowest-stage variable, plans are costed with
`step_time_s`, and the training engine runs `torch_class()`.

Adding a schedule is one class here, registered in SCHEDULES with the name the
problem format and the commands accept.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar


def micro_batches_per_replica(micro_batches: int, replicas: int) -> int:
    """m' = m / d: the micro-batches each data-parallel replica runs per step."""
    return micro_batches // replicas


class Schedule(ABC):
    """How a pipeline schedule orders a step's micro-batches, as the cost model prices it."""

    name: ClassVar[str]  # as written in problems, setups and on the command line
    label: ClassVar[str]  # as written in messages
    torch_class_name: ClassVar[str]  # its class in torch.distributed.pipelining

    def inflight(self, mode: str, micro_batches: int, replicas: int, stages_from_end: int) -> int:
        """Micro-batches whose activations a stage holds at once.

        `stages_from_end` is S - s + 1 (1 for the last stage); inference keeps
        no activations for a backward pass, so one micro-batch at a time.
        """
        if mode == "infer":
            return 1
        return self.training_inflight(micro_batches_per_replica(micro_batches, replicas), stages_from_end)

    def inflight_later(self, mode: str, micro_batches: int, replicas: int, inflight: Any) -> Any:
        """Micro-batches in flight at a stage's second backward, when the gradients exist, for a stage
        that holds `inflight` at its first: as many where a forward comes between (1F1B's steady
        state), one fewer where none does (GPipe; 1F1B once the m' forwards are done): min(i, m' - 1);
        none in inference."""
        if mode == "infer":
            return 0
        fewer = micro_batches_per_replica(micro_batches, replicas) - 1
        return (inflight + fewer - abs(inflight - fewer)) // 2

    @abstractmethod
    def training_inflight(self, per_replica: int, stages_from_end: int) -> int:
        """In training: activations held by the stage `stages_from_end` from the end, m' per replica."""

    def boundary_bytes(self, mode: str, micro_batches: int, replicas: int, inflight: int,
                       received_bytes: Any, sent_bytes: Any, output_bytes: Any = 0.0) -> Any:
        """The pipeline's buffers a stage holds (floats or numpy arrays; docs/design.md, "Cost model v1").

        torch.distributed.pipelining gives a stage, at its first step, one
        receive buffer per micro-batch of the step (m') for the activations it
        receives (`received_bytes` each), of which the in-flight ones are the
        first layer's saved input (priced with the activations), and in
        training one for the gradients of what it sends (`sent_bytes` each);
        a training stage also keeps each in-flight micro-batch's output until
        its backward; the last stage keeps every micro-batch's output
        (`output_bytes`, the logits) to the step's end, the running one priced
        by its working memory.
        """
        per_replica = micro_batches_per_replica(micro_batches, replicas)
        outputs = (per_replica - 1) * output_bytes
        if mode == "infer":
            return per_replica * received_bytes + outputs
        return (per_replica - inflight) * received_bytes + (per_replica + inflight) * sent_bytes + outputs

    def bubble_weight(self, micro_batches: int, replicas: int) -> int:
        """w in T = sum t_s + w * max t_s: the slowest stage paces all but one micro-batch."""
        return micro_batches_per_replica(micro_batches, replicas) - 1

    def step_time_s(self, stage_times_s: Sequence[float], micro_batches: int, replicas: int = 1,
                    sync_s: Sequence[float] = ()) -> float:
        """T = sum of stage times + w * the slowest stage + the slowest group sync (groups sync at once)."""
        return (sum(stage_times_s) + self.bubble_weight(micro_batches, replicas) * max(stage_times_s)
                + max(sync_s, default=0.0))

    def least_micro_batches_per_replica(self, stages: int) -> int:
        """The fewest m' that torch runs this schedule with over `stages` stages."""
        return 1

    def torch_class(self) -> Any:
        """The torch.distributed.pipelining class that runs this schedule."""
        from torch.distributed import pipelining

        return getattr(pipelining, self.torch_class_name)


class GPipe(Schedule):
    """All forwards, then all backwards: every stage holds all m' micro-batches."""

    name, label, torch_class_name = "gpipe", "GPipe", "ScheduleGPipe"

    def training_inflight(self, per_replica: int, stages_from_end: int) -> int:
        return per_replica


class OneFOneB(Schedule):
    """One forward, one backward: stage s holds at most S - s + 1 micro-batches."""

    name, label, torch_class_name = "1f1b", "1F1B", "Schedule1F1B"

    def training_inflight(self, per_replica: int, stages_from_end: int) -> int:
        return min(per_replica, stages_from_end)

    def least_micro_batches_per_replica(self, stages: int) -> int:
        return stages  # torch's Schedule1F1B refuses fewer micro-batches than stages


SCHEDULES: dict[str, Schedule] = {schedule.name: schedule for schedule in (OneFOneB(), GPipe())}
SCHEDULE_NAMES = tuple(SCHEDULES)  # the first is the default


def schedule_named(name: str) -> Schedule:
    """The schedule of a setup's `schedule` field.

    Raises:
        KeyError: no such schedule (problem files are checked against SCHEDULE_NAMES on load).
    """
    return SCHEDULES[name]

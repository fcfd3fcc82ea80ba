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

Chunked schedules (ChunkedSchedule: interleaved 1F1B, looped BFS, the zero-bubble
family) give each of p ranks v chunks (virtual stages) and price a step from the
ranks' per-micro-batch times t_r and bubble-fill times b_r:
T = m' * max_r t_r + (sum_r b_r - max_r b_r) / v (docs/design.md, "Chunked
schedules"); the chunked solver (core.planning.chunked) asks them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from core.planning.chunk_inflight import looped_bfs_held, looped_held, v_shape_held


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
        its backward: what it sends, or on the last stage the model's output
        (`output_bytes`, the logits; the engine asks torch not to keep them
        to the step's end for merging). Inference keeps every micro-batch's
        output but the running one (priced as the working activation).
        """
        per_replica = micro_batches_per_replica(micro_batches, replicas)
        if mode == "infer":
            return per_replica * received_bytes + (per_replica - 1) * output_bytes
        return ((per_replica - inflight) * received_bytes + (per_replica + inflight) * sent_bytes
                + inflight * output_bytes)

    def sent_back_bytes(self, mode: str, micro_batches: int, replicas: int, received_bytes: Any) -> Any:
        """The input gradient a stage sent back for an earlier micro-batch and still holds at a later
        backward (floats or numpy arrays; docs/design.md, "Cost model v1"): torch's GPipe and 1F1B keep
        the send's op until after the next backward, so a training stage that receives (`received_bytes`)
        holds as much again then; nothing in inference or with one micro-batch (no later backward)."""
        if mode == "infer" or micro_batches_per_replica(micro_batches, replicas) < 2:
            return 0.0 * received_bytes
        return received_bytes

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

    chunked: ClassVar[bool] = False  # one stage per rank (GPipe, 1F1B); ChunkedSchedule: v per rank

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


class ChunkedSchedule(Schedule):
    """v chunks (virtual stages) per rank; chunk c of rank r is virtual stage c * p + r
    (looped), or for the V shape r and 2p - 1 - r.

    With t_r a rank's time per micro-batch (all its chunks: forward, input
    backward, weight backward, sends) and b_r the part that cannot fill the
    bubble (t_r - 2 w_r for the zero-bubble family, whose weight backward w_r
    fills it; t_r otherwise), T = m' * max_r t_r + (sum_r b_r - max_r b_r) / v.
    Exact for equal chunks against torch's own schedules (tests/core/planning/
    test_chunked_schedules.py); v = 1, b = t is GPipe's and 1F1B's formula.
    """

    chunked = True
    zero_bubble: ClassVar[bool] = False  # weight-gradient work fills the bubble
    v_shape: ClassVar[bool] = False  # chunks of a rank mirror each other (ZBV, DualPipeV)
    fixed_chunks: ClassVar[int | None] = None  # torch's only allowed v, where it has one

    def training_inflight(self, per_replica: int, stages_from_end: int) -> int:
        return per_replica  # the single-stage solvers never price chunked schedules; the most it can be

    def chunk_counts(self, max_chunks: int) -> tuple[int, ...]:
        """The v this schedule can run with, up to `max_chunks` (v >= 2: torch's multi-stage classes)."""
        if self.fixed_chunks is not None:
            return (self.fixed_chunks,) if self.fixed_chunks <= max_chunks else ()
        return tuple(range(2, max_chunks + 1))

    def refusal(self, ranks: int, chunks: int, per_replica: int) -> str | None:
        """Why torch refuses p ranks x v chunks with m' micro-batches, or None when it runs.

        Interleaved and ZB1P: m' a multiple of its rounds, max(1, m' // p) (torch's check).
        """
        if chunks not in self.chunk_counts(chunks):
            return f"{self.label} needs {self.fixed_chunks} chunks per device, not {chunks}"
        rounds = max(1, per_replica // ranks)
        if per_replica % rounds:
            return f"{self.label} needs the micro-batches ({per_replica}) to be a multiple of {rounds}"
        return None

    def stage_of_chunk(self, rank: int, chunk: int, ranks: int) -> int:
        """The virtual stage (pipeline position) of chunk `chunk` of rank `rank`."""
        if self.v_shape:
            return rank if chunk == 0 else 2 * ranks - 1 - rank
        return chunk * ranks + rank

    def rank_of_stage(self, stage: int, ranks: int) -> int:
        """The rank that runs virtual stage `stage` (the inverse of stage_of_chunk)."""
        lap, position = divmod(stage, ranks)
        return ranks - 1 - position if self.v_shape and lap % 2 else position

    def fill_time_s(self, rank_time_s: float, weight_grad_s: float) -> float:
        """b_r: what of a rank's time per micro-batch the bubble cannot hide."""
        return max(0.0, rank_time_s - 2 * weight_grad_s) if self.zero_bubble else rank_time_s

    def chunked_step_time_s(self, rank_times_s: Sequence[float], fill_times_s: Sequence[float],
                            micro_batches: int, chunks: int, replicas: int = 1,
                            sync_s: Sequence[float] = ()) -> float:
        """T = m' * max_r t_r + (sum_r b_r - max_r b_r) / v + the slowest sync."""
        per_replica = micro_batches_per_replica(micro_batches, replicas)
        return (per_replica * max(rank_times_s) + (sum(fill_times_s) - max(fill_times_s)) / chunks
                + max(sync_s, default=0.0))

    @abstractmethod
    def held(self, per_replica: int, ranks: int, chunks: int, rank: int) -> tuple[tuple[int, ...], ...]:
        """Micro-batches rank `rank` holds per chunk, then those pending a weight backward, then whether
        its weight gradients exist, at the moments that can be its peak (core.planning.chunk_inflight,
        torch's order)."""

    def peak_chunk_activations(self, per_replica: int, ranks: int, chunks: int, rank: int) -> int:
        """The most (micro-batch, chunk) activations rank `rank` holds at once (torch's order)."""
        return max(sum(counts[:chunks]) for counts in self.held(per_replica, ranks, chunks, rank))


class Interleaved1F1B(ChunkedSchedule):
    """Interleaved 1F1B: bubble divided by v; rank r warms up (v - 1) p + 2 (p - 1 - r) forwards."""

    name, label, torch_class_name = "interleaved", "Interleaved 1F1B", "ScheduleInterleaved1F1B"

    def held(self, per_replica: int, ranks: int, chunks: int, rank: int) -> tuple[tuple[int, ...], ...]:
        return looped_held(ranks, per_replica, chunks, rank, zero_bubble=False)


class LoopedBFS(ChunkedSchedule):
    """Looped BFS: every micro-batch through a rank's chunk, chunk by chunk: GPipe's memory."""

    name, label, torch_class_name = "looped-bfs", "Looped BFS", "ScheduleLoopedBFS"

    def held(self, per_replica: int, ranks: int, chunks: int, rank: int) -> tuple[tuple[int, ...], ...]:
        return looped_bfs_held(per_replica, chunks)

    def refusal(self, ranks: int, chunks: int, per_replica: int) -> str | None:
        return None


class InterleavedZeroBubble(ChunkedSchedule):
    """ZB1P: interleaved with the backward split, weight gradients filling the bubble."""

    name, label, torch_class_name = "zb1p", "Interleaved zero bubble (ZB1P)", "ScheduleInterleavedZeroBubble"
    zero_bubble = True

    def held(self, per_replica: int, ranks: int, chunks: int, rank: int) -> tuple[tuple[int, ...], ...]:
        return looped_held(ranks, per_replica, chunks, rank, zero_bubble=True)


class ZBVZeroBubble(ChunkedSchedule):
    """ZBV: two chunks per rank in a V (rank r holds stages r and 2p - 1 - r), zero bubble."""

    name, label, torch_class_name = "zbv", "Zero bubble V (ZBV)", "ScheduleZBVZeroBubble"
    zero_bubble, v_shape, fixed_chunks = True, True, 2

    def held(self, per_replica: int, ranks: int, chunks: int, rank: int) -> tuple[tuple[int, ...], ...]:
        return v_shape_held(ranks, per_replica, rank, dual=False)

    def refusal(self, ranks: int, chunks: int, per_replica: int) -> str | None:
        if chunks != 2:
            return f"{self.label} needs 2 chunks per device, not {chunks}"
        return None


class DualPipeV(ChunkedSchedule):
    """DualPipeV (DeepSeek): ZBV's V with a forward and a backward overlapped; m' >= 2p."""

    name, label, torch_class_name = "dualpipev", "DualPipeV", "ScheduleDualPipeV"
    zero_bubble, v_shape, fixed_chunks = True, True, 2

    def held(self, per_replica: int, ranks: int, chunks: int, rank: int) -> tuple[tuple[int, ...], ...]:
        return v_shape_held(ranks, per_replica, rank, dual=True)

    def least_micro_batches_per_replica(self, stages: int) -> int:
        return stages  # torch: at least as many micro-batches as virtual stages (2p)

    def refusal(self, ranks: int, chunks: int, per_replica: int) -> str | None:
        if chunks != 2:
            return f"{self.label} needs 2 chunks per device, not {chunks}"
        if per_replica < 2 * ranks:
            return f"{self.label} needs at least {2 * ranks} micro-batches on {ranks} devices, got {per_replica}"
        return None


SCHEDULES: dict[str, Schedule] = {schedule.name: schedule for schedule in (
    OneFOneB(), GPipe(), Interleaved1F1B(), InterleavedZeroBubble(), ZBVZeroBubble(), DualPipeV(), LoopedBFS())}
SCHEDULE_NAMES = tuple(SCHEDULES)  # the first is the default
AUTO_SCHEDULE = "auto"  # the planner picks the schedule (and v) with the least step time
SCHEDULE_CHOICES = (AUTO_SCHEDULE, *SCHEDULE_NAMES)  # what setups, problems and commands accept
# What the pipeline engine runs: every schedule (chunked ones with v chunks a process, core.training.runner).
RUNNABLE_SCHEDULES = SCHEDULE_NAMES


def schedule_named(name: str) -> Schedule:
    """The schedule of a setup's `schedule` field; "auto" is priced as 1F1B by the solvers
    that do not choose a schedule themselves (the baselines, the MILP).

    Raises:
        KeyError: no such schedule (problem files are checked against SCHEDULE_NAMES on load).
    """
    return SCHEDULES[SCHEDULE_NAMES[0] if name == AUTO_SCHEDULE else name]

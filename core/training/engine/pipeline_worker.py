"""One pipeline stage of one replica per process: the entry point torchrun starts.

    python -m torch.distributed.run --nproc-per-node d*S ... -m core.training.engine.pipeline_worker RUN_DIR

Rank r = replica * S + stage runs that stage of the plan with
torch.distributed.pipelining (`PipelineStage` driven by the setup's schedule's
torch class, core.planning.schedules: `Schedule1F1B` or `ScheduleGPipe`, over its replica's pipeline group, n_microbatches = m / d,
or for a chunked schedule (S = v * p) the process at pipeline position r runs its v chunks' stages,
plan.stages_of_rank(r), under the multi-stage class (core.training.engine.chunked_pipeline),
mean loss per micro-batch, gradients scaled by the schedule). With d > 1
replicas each stage's group synchronises its gradients with FSDP2 (see
core.training.engine.data_parallel). With t > 1 each stage runs on t processes,
rank (replica * S + stage) * t + tp_rank, its blocks split over them
(core.training.engine.tensor_parallel). gloo on CPU, nccl when every stage is a
GPU. Rank 0 writes metrics.jsonl; replica 0 writes each stage's file of a
checkpoint, and the first process of each host commits that host's checkpoint.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from core.model.gpt import lm_loss
from core.planning.front_door import torch_device_of
from core.planning.plan import replica_and_stage
from core.planning.schedules import schedule_named
from core.system.process import exit_with_parent
from core.training.engine import checkpoint as ckpt
from core.training.engine.chunked_pipeline import chunked_schedule
from core.training.engine.context import RunContext
from core.training.engine.data_parallel import (
    MeshPosition,
    build_mesh,
    replica_slice,
    shard_payload,
    shard_stage,
)
from core.training.engine.loop import StepStats, train_loop
from core.training.engine.memory_tracker import CUDA, TENSORS, StepMeter, stage_tensors
from core.training.engine.model_stages import build_stages, tied_pair
from core.training.engine.numerics import apply_default_dtype
from core.training.engine.optim import (
    clip_gradients,
    grad_square_sum,
    make_optimizer,
    set_learning_rate,
)
from core.training.engine.pipeline_launch import THREADS_ENV
from core.training.engine.stages import norm_parameters
from core.training.engine.state import apply_payloads, peak_memory_bytes, stage_payload, synchronize
from core.training.engine.tensor_parallel import parallelize_stage, payload_in_order, sum_gradients
from core.training.engine.tied_copies import TiedCopies
from core.training.engine.timed_stage import ActionLog, TimedStage
from core.training.metrics import MetricsWriter, format_row
from core.training.step_timeline import write_rank_timeline

# collect's one all-reduce: each rank's fields in its own slots, then the shared slots that
# every rank adds into (the loss and validation loss from the last stage, the stop vote).
_RANK_FIELDS = ("compute_s", "step_time_s", "peak_memory_bytes", "sync_s", "measured_peak_bytes", "on_cuda",
                "reserved_bytes")
_LOSS, _VAL_LOSS, _STOP = range(3)  # offsets of the shared slots
_SHARED_SLOTS = 3


class PipelineEngine:
    """This rank's stage (or chunks) of its replica's pipeline (see core.training.engine.loop.Engine)."""

    def __init__(self, context: RunContext, rank: int, local_rank: int, device: torch.device):
        self.context, self.config, self.rank, self.local_rank = context, context.config, rank, local_rank
        self.num_stages, self.device, self.zero = context.num_stages, device, context.zero
        self.position = MeshPosition.of_rank(rank, context.data_parallel, context.pipeline_ranks,
                                             context.tensor_parallel)
        self.indices = context.plan.stages_of_rank(self.position.stage)  # [stage], or its chunks' stages
        self.first, self.last = 0 in self.indices, self.num_stages - 1 in self.indices
        self.is_writer = rank == 0
        self.data = context.data()
        # identical init on every rank
        self.modules = build_stages(context, self.indices, [device] * len(self.indices), untie=True)
        pipeline_group, split, self.tp_group = None, None, None  # one replica, t = 1: the world is the pipeline
        if self.replicated or self.position.tensor_parallel > 1:  # t > 1: one stage a rank (core.training.runner)
            mesh = build_mesh(self.position, self.zero)  # every rank calls it: it makes the groups
            pipeline_group = mesh["pp"].get_group()
            if self.position.tensor_parallel > 1:  # the blocks split over the stage's group: before FSDP2
                split, self.tp_group = parallelize_stage(self.modules[0], mesh["tp"]), mesh["tp"].get_group()
            for module in self.modules if self.replicated else ():  # each chunk its own FSDP2 root
                shard_stage(module, mesh, self.zero)  # parameters become DTensors: before the optimizer
        pair = tied_pair(context)
        self.tied = TiedCopies(context.plan, self.position, pair, self.indices, self.modules)
        named = [(name, p) for module in self.modules for name, p in module.named_parameters()
                 if p.requires_grad]  # LoRA: the adapters alone
        self.names = {id(p): name for name, p in named}
        self.parameters = [p for _, p in named]
        self.norm_parameters = [p for index, module in zip(self.indices, self.modules, strict=True)
                                for p in norm_parameters(module, pair is not None and index == pair[1])]
        if split is not None and self.position.tp > 0:  # whole on every process: counted by tp rank 0
            self.norm_parameters = [p for p in self.norm_parameters if self.names.get(id(p)) in split.sharded]
        self.grad_summed = [p for name, p in named if split is not None and name in split.grad_summed]
        self.optimizer = make_optimizer(named, self.config)
        micro_batches = context.replica_micro_batches
        if context.plan.chunks > 1:
            stages, self.schedule = chunked_schedule(context.schedule_name, self.modules, self.indices,
                                                     self.num_stages, device, micro_batches, self._loss,
                                                     group=pipeline_group, stage_class=TimedStage)
            self.stages = [stage for stage in stages if isinstance(stage, TimedStage)]
        else:
            self.stages = [TimedStage(self.modules[0], self.indices[0], self.num_stages, device, group=pipeline_group)]
            schedule = schedule_named(context.schedule_name).torch_class()
            self.schedule = schedule(self.stages[0], n_microbatches=micro_batches, loss_fn=self._loss)
        self.action_log = ActionLog()  # the step's actions, for its measured timeline
        for stage in self.stages:
            stage.action_log = self.action_log
        self.loss_s = 0.0
        self.comm_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
        self.meter = StepMeter([device])  # this stage's measured peak memory
        self._measured: dict[str, Any] = {}
        self._val_loss: float | None = None

    @property
    def replicated(self) -> bool:
        return self.position.replicas > 1

    def _loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        loss = lm_loss(output, target)
        self.loss_s += time.perf_counter() - started  # the last stage's compute
        return loss

    # ------------------------------------------------------------------ training
    def train_step(self, step: int, lr: float) -> None:
        setup = self.config.setup
        set_learning_rate(self.optimizer, lr)
        inputs = targets = None
        if self.first or self.last:  # the global batch; this replica runs its slice of it
            inputs, targets = self.data.train_batch(self.config.seed, step,
                                                    setup.micro_batches * setup.micro_batch_size, setup.seq_len)
        for stage in self.stages:
            stage.compute_s = stage.sync_s = 0.0
        self.loss_s = 0.0
        self.action_log.begin()
        started = time.perf_counter()
        with self.meter.step(step, self._holdings):
            self.optimizer.zero_grad(set_to_none=True)
            with self.action_log.waits():
                losses = self._run_schedule(self.schedule.step, inputs, targets)
            self.tied.sum_gradients()
            sum_gradients(self.grad_summed, self.tp_group)  # qwen3's q and k norms: each process saw its heads
            # ---- global gradient norm over all stages (and shards), clip, update
            squares = self._all_reduce([grad_square_sum(self.norm_parameters)])[0]
            norm = (squares / self.position.replicas if self.zero == 0 else squares) ** 0.5  # zero 0: d copies
            clip_gradients(self.parameters, norm, self.config.grad_clip)
            self.optimizer.step()
            synchronize(self.device)
        step_time_s = time.perf_counter() - started
        self._write_timeline(step, step_time_s)
        loss = torch.stack(losses).mean().item() if losses else 0.0  # host-device sync
        chunk_compute = [stage.compute_s + (self.loss_s if index == self.num_stages - 1 else 0.0)
                         for index, stage in zip(self.indices, self.stages, strict=True)]
        self._measured = {"loss": loss, "grad_norm": norm, "step_time_s": step_time_s,
                          "compute_s": sum(chunk_compute), "chunk_compute_s": chunk_compute,
                          "sync_s": sum(stage.sync_s for stage in self.stages) if self.replicated else 0.0}

    def _write_timeline(self, step: int, step_time_s: float) -> None:
        """Replica 0's ranks write the step's actions where the log shows a step (and the last)."""
        config = self.config
        if self.position.replica == 0 and self.position.tp == 0 and (
                step % config.log_interval == 0 or step == config.steps):
            write_rank_timeline(self.context.paths.root, self.position.stage, step, step_time_s,
                                self.action_log.actions)

    def _holdings(self) -> list[list[torch.Tensor]]:
        """What this rank holds between steps, all its chunks together (one device)."""
        held = [tensor for module in self.modules for tensor in stage_tensors(module, self.optimizer)]
        return [held + self._receive_buffers()]

    def _receive_buffers(self) -> list[torch.Tensor]:
        """What the stage keeps between steps to receive into: activations from the stage before
        and gradients from the one after, one buffer per micro-batch of a step (torch allocates them
        at the first step and keeps them)."""
        infos = [info for stage in self.stages
                 for info in (*stage.args_recv_info.values(), *stage.grad_recv_info.values())]
        return [info.buffer for group in infos for info in group if isinstance(info.buffer, torch.Tensor)]

    def _run_schedule(self, run: Any, inputs: Any, targets: Any) -> list[torch.Tensor]:
        """Feed the schedule what this rank has: inputs on the first, targets on the last."""
        losses: list[torch.Tensor] = []
        args = (replica_slice(inputs, self.position).to(self.device),) if self.first else ()
        # return_outputs=False: torch would keep every micro-batch's logits to the step's end to merge
        # them, which nothing reads (docs/design.md, "Cost model v1", the pipeline's buffers)
        if self.last:
            run(*args, target=replica_slice(targets, self.position).to(self.device), losses=losses,
                return_outputs=False)
        else:
            run(*args, return_outputs=False)
        return [loss.detach() for loss in losses]  # lm_loss: fp32 or wider

    @torch.no_grad()
    def evaluate(self) -> None:
        setup = self.config.setup
        for module in self.modules:
            module.eval()
        losses: list[torch.Tensor] = []
        for index in range(self.config.eval_batches):
            inputs = targets = None
            if self.first or self.last:
                inputs, targets = self.data.val_batch(self.config.seed, index,
                                                      setup.micro_batches * setup.micro_batch_size, setup.seq_len)
            losses += self._run_schedule(self.schedule.eval, inputs, targets)
        for module in self.modules:
            module.train()
        self._val_loss = torch.stack(losses).mean().item() if losses else 0.0  # host-device sync

    # -------------------------------------------------------------- measurements
    def collect(self, stop_requested: bool) -> StepStats:
        """One all-reduce gathers every rank's timings, the loss and the stop vote.

        Per stage: compute is the mean over its replicas (and tp ranks), wall time, peak
        memory and sync the largest; losses are the mean over the replicas.
        A chunked schedule's stages (chunks) have their own compute; idle,
        peak memory and sync are their rank's (docs/design.md, "Chunked schedules").
        """
        per_rank = len(_RANK_FIELDS)
        chunk_slots = per_rank * self.position.world_size  # each stage's compute, replicas adding in
        copies = self.position.replicas * self.position.tensor_parallel  # the processes of a stage
        shared = chunk_slots + self.num_stages  # the first shared slot
        values = [0.0] * (shared + _SHARED_SLOTS)
        measured = self._measured
        reading = (self.meter.readings() or (None,))[0]
        mine = {"compute_s": measured["compute_s"], "step_time_s": measured["step_time_s"],
                "peak_memory_bytes": float(peak_memory_bytes(self.device)), "sync_s": measured["sync_s"],
                "measured_peak_bytes": float(reading.peak_bytes) if reading is not None else -1.0,
                "on_cuda": 1.0 if reading is not None and reading.source == CUDA else 0.0,
                "reserved_bytes": float(reading.reserved_bytes) if reading is not None else 0.0}
        values[per_rank * self.rank:per_rank * (self.rank + 1)] = [mine[field] for field in _RANK_FIELDS]
        for index, compute_s in zip(self.indices, measured["chunk_compute_s"], strict=True):
            values[chunk_slots + index] = compute_s / copies
        if self.last:
            values[shared + _LOSS] = measured["loss"] / copies
            values[shared + _VAL_LOSS] = (self._val_loss or 0.0) / copies
        values[shared + _STOP] = 1.0 if stop_requested else 0.0
        total = self._all_reduce(values)

        plan = self.context.plan
        owners = [plan.rank_of_stage(stage) for stage in range(self.num_stages)]

        def per_stage(field: str) -> list[list[float]]:
            """Each stage's values of `field` (its rank's), one per replica and tp rank."""
            at, position = _RANK_FIELDS.index(field), self.position
            return [[total[per_rank * position.rank(r, owner, tp) + at] for r in range(position.replicas)
                     for tp in range(position.tensor_parallel)] for owner in owners]

        compute = tuple(total[chunk_slots:shared])
        rank_compute = [sum(group) / len(group) for group in per_stage("compute_s")]  # all of a rank's chunks
        measured_peaks = tuple(int(max(group)) for group in per_stage("measured_peak_bytes"))
        # every stage has a tracked step behind it; a chunk's is its rank's, all its chunks together
        known = min(measured_peaks) >= 0
        step_time_s = max(max(group) for group in per_stage("step_time_s"))
        stats = StepStats(
            loss=total[shared + _LOSS], grad_norm=measured["grad_norm"], step_time_s=step_time_s,
            stage_compute_s=compute, stage_idle_s=tuple(max(0.0, step_time_s - c) for c in rank_compute),
            stage_peak_memory_bytes=tuple(int(max(group)) for group in per_stage("peak_memory_bytes")),
            stage_sync_s=tuple(max(group) for group in per_stage("sync_s")) if self.replicated else (),
            val_loss=total[shared + _VAL_LOSS] if self._val_loss is not None else None,
            stop=total[shared + _STOP] > 0,
            stage_measured_peak_memory_bytes=measured_peaks if known else (),
            stage_measured_memory_source=tuple(CUDA if max(group) > 0 else TENSORS
                                               for group in per_stage("on_cuda")) if known else (),
            stage_measured_reserved_memory_bytes=tuple(int(max(group)) for group in per_stage("reserved_bytes"))
            if known else (),
        )
        self._val_loss = None
        return stats

    def _all_reduce(self, values: list[float], op: Any = dist.ReduceOp.SUM) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(tensor, op=op)
        return [float(v) for v in tensor.cpu().tolist()]  # host-device sync

    # --------------------------------------------------------------- checkpoints
    def save_checkpoint(self, step: int) -> None:
        checkpoints, t = self.context.paths.checkpoints, self.position.tensor_parallel
        for index, module in zip(self.indices, self.modules, strict=True):  # one file per stage (chunk)
            layout = self.context.layouts[index]
            payload = stage_payload(step, layout, module, self.optimizer)  # every replica: sharded state gathers
            payload = payload_in_order(payload, t, head_order=False)  # whole, in the model's order, any t
            # A host's ranks are consecutive, so local ranks 0, t, .. (p-1) t are the first process of
            # each pipeline position this host runs: one file per stage per host, and each host's run
            # directory holds every stage its processes run (replica 0's on one host).
            if self.local_rank < self.context.pipeline_ranks * t and self.local_rank % t == 0:
                ckpt.write_stage_file(ckpt.temp_dir(checkpoints, step), index, payload)
        dist.barrier()
        if self.local_rank == 0:  # one committer per host: its run directory holds its stages
            ckpt.commit_checkpoint(checkpoints, step, self.num_stages)
            ckpt.prune_checkpoints(checkpoints, self.config.keep_checkpoints)
        dist.barrier()

    def restore(self) -> int:
        latest = ckpt.latest_checkpoint(self.context.paths.checkpoints)
        mine = ckpt.checkpoint_step(latest) if latest is not None else 0
        lowest, highest = (self._all_reduce([mine], dist.ReduceOp.MIN)[0],
                           self._all_reduce([mine], dist.ReduceOp.MAX)[0])
        if lowest != highest:
            raise RuntimeError(f"stages hold checkpoints of different steps ({int(lowest)} and {int(highest)})")
        if latest is None:
            return 0
        t = self.position.tensor_parallel
        payloads = [payload_in_order(ckpt.load_stage_file(latest, index), t, head_order=True)
                    for index in self.indices]
        for payload, module in zip(payloads, self.modules, strict=True) if self.replicated or t > 1 else ():
            # full tensors, laid out as this rank's (sharded) parameters, chunk by chunk
            named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
            payload["model"], payload["optimizer"]["state"] = shard_payload(
                payload["model"], payload["optimizer"]["state"], named, module)
        apply_payloads(payloads, self.modules, self.optimizer, self.names)
        return mine


def main(argv: list[str]) -> int:
    """Entry point of one worker (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK)."""
    run_dir = Path(argv[0])
    rank = int(os.environ.get("RANK", "0"))
    try:
        return _train(run_dir, rank)
    except BaseException as error:
        _record_error(run_dir, rank, error)
        raise


def _train(run_dir: Path, rank: int) -> int:
    world, local_rank = int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    context = RunContext.load(run_dir)
    if world != context.num_processes:
        raise RuntimeError(f"the launch has {world} processes but the plan has {context.data_parallel} x "
                           f"{context.pipeline_ranks} x {context.tensor_parallel} (replicas x pipeline ranks x "
                           "tensor-parallel)")
    torch.set_num_threads(int(os.environ.get(THREADS_ENV, "1")))
    apply_default_dtype()  # fp32, or a test's float64
    exit_with_parent(poll_s=0.5, exit_code=1)  # torchrun gone (kill -9): no orphans holding ports
    device = _stage_device(context, rank, local_rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=5))
    try:
        engine = PipelineEngine(context, rank, local_rank, device)
        writer = MetricsWriter(context.paths.metrics) if rank == 0 else None
        steps = context.config.steps
        log_every = context.config.log_interval

        def emit(row: dict[str, Any]) -> None:
            if row["step"] % log_every == 0 or row["step"] == steps or "val_loss" in row:
                print(format_row(row, steps), flush=True)

        try:
            outcome = train_loop(engine, context.config, writer, emit, context.paths.stop_file.exists,
                                 context.predicted_memory_bytes, context.memory_subjects)
        finally:
            if writer is not None:
                writer.close()
        if rank == 0:
            print(f"pipeline: {outcome}", flush=True)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


def _stage_device(context: RunContext, rank: int, local_rank: int) -> torch.device:
    """Stages planned on a GPU use this host's GPU; cpu and simulated ones the CPU."""
    devices = {device for layout in context.layouts for device in layout.torch_devices}
    if len({d.split(":")[0] for d in devices}) > 1:
        raise RuntimeError("the pipeline engine cannot mix CPU and GPU stages; use --engine local")
    planned = torch_device_of(context.device_of_rank(rank))
    if planned == "cpu":
        return torch.device("cpu")
    return torch.device(planned if context.config.nnodes == 1 else f"cuda:{local_rank}")


def _record_error(run_dir: Path, rank: int, error: BaseException) -> None:
    """errors/rank_R.json: the job puts the first one into the status."""
    from core.training.run_dir import RunPaths, atomic_write_json

    if isinstance(error, (KeyboardInterrupt, SystemExit)):
        return
    tail = "".join(traceback.format_exception(type(error), error, error.__traceback__))[-4000:]
    try:
        atomic_write_json(RunPaths(run_dir).errors / f"rank_{rank}.json",
                          {"rank": rank, "error": _error_line(run_dir, rank, error), "traceback": tail,
                           "time": time.time()})
    except OSError:
        pass
    print(json.dumps({"rank": rank, "error": str(error)}), file=sys.stderr, flush=True)


def _error_line(run_dir: Path, rank: int, error: BaseException) -> str:
    """The error in one line; running out of memory names the rank's stage, its device and the request."""
    from core.training.memory_check import is_out_of_memory, out_of_memory_line, stage_label

    if not is_out_of_memory(error):
        return f"{type(error).__name__}: {error}"
    try:
        context = RunContext.load(run_dir)
        replica, position = replica_and_stage(rank // context.tensor_parallel, context.pipeline_ranks)
        stage = context.plan.stages_of_rank(position)[0]
        layout = context.layouts[stage]
        device = (layout.devices or (layout.device,))[replica]
    except Exception:  # the run's files are unreadable: the rank still says what happened
        return out_of_memory_line(error, [f"rank {rank}"], "cpu")
    return out_of_memory_line(error, [stage_label(stage + 1, context.num_stages, device)], torch_device_of(device))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

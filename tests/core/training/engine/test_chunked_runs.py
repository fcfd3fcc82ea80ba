"""The pipeline engine runs chunked schedules: a rank's chunks, checkpoints per chunk, exact resume.

gpt-nano on 2 CPU processes (4 with 2 replicas, each chunk FSDP2's unit), planned by the
chunked solver for the schedule (v chunks a device): trained N steps, resumed to 2N, and
the 2N losses equal a plain single-process loop's 2N straight (float64,
FLOAT64_AGREEMENT), so the chunks, the tied copies across or within a rank, the
replicas' gradient reduction (and ZeRO's sharded state), the checkpoint of every chunk
and its restore are all exact.
"""

from dataclasses import replace

import pytest
import torch

from core.model.gpt import GPT
from core.training.engine import checkpoint as ckpt
from core.training.engine.context import RunContext
from core.training.launcher import list_runs, resume_run, start_run, wait_run
from core.training.metrics import read_metrics
from core.training.step_timeline import read_step_timeline
from tests.core.training.support import (
    FLOAT64_AGREEMENT,
    bare_loop_losses,
    compute_dtype,
    losses,
    tiny_config,
    write_corpus,
)

STEPS = 4  # then resumed to 2 x STEPS


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


def _finished(run_dir):
    status = wait_run(run_dir, timeout_s=600)
    assert status.state == "finished", (run_dir / "train.log").read_text()[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize(("schedule", "replicas", "zero", "recompute"), [
    ("interleaved", 1, 0, False),  # looped chunks
    ("zbv", 1, 0, False),  # the V: embedding and head on rank 0
    ("interleaved", 2, 0, False),  # 2 replicas x 2 ranks x 2 chunks, each chunk FSDP2's unit, gradients all-reduced
    ("zbv", 2, 1, False),  # and sharded (ZeRO), the tied copies on one rank of each replica
    ("zbv", 2, 1, True),  # with the split backward's recompute-once checkpoint (core.training.engine.recompute)
])
def test_a_chunked_run_resumes_exactly_and_matches_a_single_process(tmp_path, corpus, schedule, replicas, zero,
                                                                     recompute):
    config = tiny_config(corpus, engine="pipeline", steps=STEPS, checkpoint_interval=STEPS, eval_interval=STEPS,
                         devices=f"{2 * replicas}xcpu:1GiB")
    config = replace(config, setup=replace(config.setup, micro_batches=4 * replicas, schedule=schedule,
                                           data_parallel=replicas, zero=zero, recompute=recompute))
    with compute_dtype("float64"):
        run_dir = start_run(config, tmp_path / "run", emit=lambda _: None).run_dir
        _finished(run_dir)
        resume_run(run_dir, 2 * STEPS)
        _finished(run_dir)
        reference = bare_loop_losses(run_dir, 2 * STEPS)
    context = RunContext.load(run_dir)
    plan = context.plan
    assert plan.schedule == schedule and plan.chunks >= 2 and plan.data_parallel == replicas
    assert context.config.setup.recomputes == recompute
    assert context.num_processes == 2 * replicas
    assert losses(run_dir) == pytest.approx(reference, abs=FLOAT64_AGREEMENT)
    # ---- one checkpoint file per chunk; together they are the whole model, tied copies equal
    latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
    assert len(list(latest.glob("stage_*.pt"))) == len(plan.stages)
    state = ckpt.load_model_state(latest)
    GPT(context.gpt).load_state_dict(state, strict=True)
    head = torch.load(latest / f"stage_{len(plan.stages) - 1}.pt", weights_only=True)["model"]["lm_head.weight"]
    assert torch.equal(state["embed.wte.weight"], head)
    # ---- every chunk measured; a rank's idle is the same for its chunks
    row = read_metrics(run_dir / "metrics.jsonl")[-1]
    assert len(row["stage_compute_s"]) == len(plan.stages) and min(row["stage_compute_s"][1:]) > 0
    idle = row["stage_idle_s"]
    for position in range(2):
        assert len({idle[stage] for stage in plan.stages_of_rank(position)}) == 1
    # ---- memory is a device's, its chunks together: each chunk carries its rank's peak; runs shows it once
    peaks = row["stage_measured_peak_memory_bytes"]
    for position in range(2):
        chunks = plan.stages_of_rank(position)
        assert len({peaks[stage] for stage in chunks}) == 1 and peaks[chunks[0]] > 0
    # ---- the last step's actions, per rank: every micro-batch of every chunk forward once and backward
    # once (whole, or as input then weight backward), one at a time on a rank
    step = read_step_timeline(run_dir)
    assert step is not None and step.step == 2 * STEPS and step.ranks == 2
    per_replica = config.setup.micro_batches // replicas
    for stage in range(len(plan.stages)):
        kinds = sorted((b.micro_batch, b.kind) for b in step.blocks if b.stage == stage)
        backward = ["I", "W"] if schedule == "zbv" else ["B"]  # split (the first stage's I does nothing)
        assert kinds == sorted((mb, kind) for mb in range(per_replica) for kind in ["F", *backward]), stage
    for position in range(2):
        mine = sorted((b for b in step.blocks if b.rank == position), key=lambda b: b.start_s)
        assert {b.stage for b in mine} == set(plan.stages_of_rank(position))
        assert all(a.start_s + a.duration_s <= b.start_s + 1e-6 for a, b in zip(mine, mine[1:]))
        assert mine[-1].start_s + mine[-1].duration_s <= step.step_s
    summary = next(run for run in list_runs(tmp_path) if run.path == run_dir)
    assert len(summary.predicted_memory_bytes) == 2 and None not in summary.measured_peak_memory_bytes

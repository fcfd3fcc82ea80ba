"""Background jobs under control: stop, kill -9 and resume, crashes, two nodes; a
one-machine pipeline listens on loopback only, and (stopped and resumed) trains as one
process does.

torch's TCPStore listens on every interface by default; core.training.engine.
loopback_run hands it sockets bound to 127.0.0.1, and gloo is kept on `lo`.
"""

import ipaddress
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
import torch

from core.model.gpt import GPT
from core.training.engine import checkpoint as ckpt
from core.training.engine.context import RunContext
from core.training.engine.local import run_local
from core.training.engine.pipeline_launch import free_port
from core.training.launcher import read_status, resume_run, start_run, stop_run, wait_run
from core.training.metrics import read_metrics
from core.training.plan_file import read_plan_file
from core.training.run_dir import process_alive
from core.training.runner import prepare_new_run
from tests.core.training.support import (
    FLOAT64_AGREEMENT,
    bare_loop_losses,
    compute_dtype,
    losses,
    tiny_config,
    wait_for,
    write_corpus,
    write_plan,
)

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow  # background jobs and torchrun: seconds each


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


def _rows(run_dir):
    return read_metrics(run_dir / "metrics.jsonl")


def _check_after_a_kill(run_dir):
    """Every committed checkpoint is whole and loads; no metrics row up to it is lost."""
    committed = ckpt.list_checkpoints(run_dir / "checkpoints")
    for path in committed:
        ckpt.verify_checkpoint(path)
        for stage in (0, 1):
            assert torch.load(path / f"stage_{stage}.pt", weights_only=True)["step"] == ckpt.checkpoint_step(path)
    last = ckpt.checkpoint_step(committed[-1]) if committed else 0
    steps = [row["step"] for row in _rows(run_dir)]
    assert steps[:last] == list(range(1, last + 1))
    return last


def test_kill_minus_9_at_random_moments_then_resume(tmp_path, corpus):
    plan = write_plan(tmp_path / "plan.json")
    config = tiny_config(corpus, steps=40, checkpoint_interval=2, keep_checkpoints=2, eval_interval=20)
    run_dir = start_run(config, tmp_path / "run", read_plan_file(plan), emit=lambda _: None).run_dir
    rng = random.Random(2024)
    resumed_from = []
    for _ in range(3):
        pid = read_status(run_dir).pid
        wait_for(lambda: len(_rows(run_dir)) >= (resumed_from[-1] if resumed_from else 0) + 2, 60, "progress")
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda pid=pid: not process_alive(pid), 10, "the job to die")
        assert read_status(run_dir).state == "failed"  # killed: reads failed, not running
        resumed_from.append(_check_after_a_kill(run_dir))
        resume_run(run_dir)
    status = wait_run(run_dir, timeout_s=300)  # generous: a loaded 2-core CI machine runs 40 steps slowly
    assert status.state == "finished", (run_dir / "train.log").read_text()[-3000:]
    assert [row["step"] for row in _rows(run_dir)] == list(range(1, 41))  # each step once, in order
    assert resumed_from == sorted(resumed_from) and resumed_from[-1] > 0
    # the resumed curve is the uninterrupted one: same data order, same state
    reference = tmp_path / "reference"
    context = prepare_new_run(replace(config, checkpoint_interval=1000), reference, read_plan_file(plan), emit=lambda _: None)
    run_local(context, lambda row: None, lambda: False)
    assert losses(run_dir) == pytest.approx(losses(reference), abs=1e-6)


def listeners(pid):
    """(pid, address, port) of every listening socket of a process and its children."""
    found = []
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            connections = process.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found += [(process.pid, c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN]
    return found


PIPELINE_STEPS = 30


def test_a_pipeline_listens_on_loopback_only_stops_within_seconds_and_resumed_trains_as_one_process(tmp_path,
                                                                                                    corpus):
    """One two-stage torchrun pipeline, stopped early and resumed to 30 steps: it opens no port
    beyond loopback, Stop ends it within seconds with a checkpoint, and the resumed run learns,
    matches a plain single-process loop step for step in float64, measures every stage and
    saves each stage in its own process (what a run that was never stopped must do too)."""
    plan = write_plan(tmp_path / "plan.json")
    # far more steps than run before the stop, on the learning-rate plan of a 30-step run
    config = tiny_config(corpus, engine="pipeline", steps=100_000, lr_decay_steps=PIPELINE_STEPS,
                         checkpoint_interval=10)
    with compute_dtype("float64"):  # the curve is compared at FLOAT64_AGREEMENT below, on any CPU
        handle = start_run(config, tmp_path / "run", read_plan_file(plan), emit=lambda _: None)
    run_dir = handle.run_dir
    wait_for(lambda: len(_rows(run_dir)) >= 3, 90, "the pipeline to train")
    # ---- no port of it is open to the network
    found = listeners(read_status(run_dir).pid)
    assert len({pid for pid, _, _ in found}) >= 2  # the agent's store and the workers' gloo sockets
    exposed = [entry for entry in found if not ipaddress.ip_address(entry[1]).is_loopback]
    assert exposed == []
    # ---- stop: within seconds, with a checkpoint
    asked = time.monotonic()
    assert stop_run(run_dir)
    status = wait_run(run_dir, timeout_s=30)
    assert time.monotonic() - asked < 10
    assert status.state == "stopped", (run_dir / "train.log").read_text()[-3000:]
    latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
    assert latest is not None and ckpt.checkpoint_step(latest) == status.step == _rows(run_dir)[-1]["step"]
    assert status.step < PIPELINE_STEPS
    wait_for(lambda: not process_alive(status.pids["torchrun"]), 10, "torchrun to exit")
    # ---- resume the pipeline: it continues at the right step, on the same curve
    with compute_dtype("float64"):
        resume_run(run_dir, steps=PIPELINE_STEPS)
        resumed = wait_run(run_dir, timeout_s=180)
        assert resumed.state == "finished", (run_dir / "train.log").read_text()[-3000:]
        assert resumed.step == PIPELINE_STEPS
        rows = _rows(run_dir)
        assert [row["step"] for row in rows] == list(range(1, PIPELINE_STEPS + 1))
        # two processes give what one plain loop gives, step for step: measured within 2.7e-15 in
        # float64 over the 30 steps (fp32: 2.4e-6, at step 7)
        curve = losses(run_dir)
        assert curve == pytest.approx(bare_loop_losses(run_dir, PIPELINE_STEPS), abs=FLOAT64_AGREEMENT)
    # ---- it learns
    assert sum(curve[-5:]) / 5 < 0.7 * curve[0]
    # ---- every step measured each stage
    for row in rows:
        assert len(row["stage_compute_s"]) == 2 and min(row["stage_compute_s"]) > 0
        assert min(row["stage_idle_s"]) >= 0 and min(row["stage_peak_memory_bytes"]) > 0
        assert row["tokens_per_s"] > 0 and row["lr"] > 0
    assert [row["step"] for row in rows if "val_loss" in row] == [10, 20, 30]
    assert (run_dir / "report.json").exists()
    # ---- each process saved only its own stage; together they are the whole model
    latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
    assert ckpt.checkpoint_step(latest) == PIPELINE_STEPS
    first = torch.load(latest / "stage_0.pt", weights_only=True)
    second = torch.load(latest / "stage_1.pt", weights_only=True)
    assert not any(key.startswith(("h.3.", "lm_head")) for key in first["model"])
    assert not any(key.startswith(("embed", "h.0.")) for key in second["model"])
    assert torch.equal(first["model"]["embed.wte.weight"], second["model"]["lm_head.weight"])  # tied copies agree
    GPT(RunContext.load(run_dir).gpt).load_state_dict(ckpt.load_model_state(latest), strict=True)
    assert read_status(run_dir).pids["torchrun"] > 0


def _crash(run_dir, at_step):
    """Run the job in the foreground through tests.core.training.crashing; its status after."""
    subprocess.run([sys.executable, "-m", "tests.core.training.crashing", "job", str(at_step), str(run_dir)],
                   cwd=ROOT, timeout=300, capture_output=True, check=False)
    return read_status(run_dir)


def test_a_crash_leaves_status_failed_with_the_traceback(tmp_path, corpus):
    plan = write_plan(tmp_path / "plan.json")
    run_dir = tmp_path / "run"
    prepare_new_run(tiny_config(corpus, steps=10), run_dir, read_plan_file(plan), emit=lambda _: None)
    status = _crash(run_dir, at_step=3)
    assert status.state == "failed"
    assert "failing at step 3" in status.error and "\n" not in status.error
    assert "Traceback" in status.traceback and "loop.py" in status.traceback
    assert [row["step"] for row in _rows(run_dir)] == [1, 2]


def test_a_crash_in_a_pipeline_worker_is_reported(tmp_path, corpus):
    plan = write_plan(tmp_path / "plan.json")
    run_dir = tmp_path / "run"
    prepare_new_run(tiny_config(corpus, engine="pipeline", steps=10), run_dir, read_plan_file(plan), emit=lambda _: None)
    status = _crash(run_dir, at_step=2)
    assert status.state == "failed"
    assert "failing at step 2" in status.error and status.error.startswith("rank ")
    assert "pipeline_worker.py" in status.traceback


def test_two_nodes_on_loopback_train_one_pipeline(tmp_path, corpus):
    plan = write_plan(tmp_path / "plan.json")
    endpoint = f"127.0.0.1:{free_port()}"
    gpipe = replace(tiny_config(corpus).setup, schedule="gpipe")  # the other schedule, here
    with compute_dtype("float64"):  # the curve is compared at FLOAT64_AGREEMENT below
        handles = [start_run(tiny_config(corpus, engine="pipeline", steps=12, nnodes=2, node_rank=rank,
                                         rdzv_endpoint=endpoint, checkpoint_interval=6, setup=gpipe),
                             tmp_path / f"node{rank}", read_plan_file(plan), emit=lambda _: None)
                   for rank in (0, 1)]
    for handle in handles:
        status = wait_run(handle.run_dir, timeout_s=180)
        assert status.state == "finished", (handle.run_dir / "train.log").read_text()[-3000:]
    node0, node1 = (handle.run_dir for handle in handles)
    assert "--node-rank 1" in (node1 / "train.log").read_text()
    curve = losses(node0)  # rank 0 (node 0) writes the metrics
    assert len(curve) == 12 and curve[-1] < curve[0] - 0.5
    with compute_dtype("float64"):  # measured within 3.6e-15 over the 12 steps (fp32: 5.5e-6, at step 8)
        assert curve == pytest.approx(bare_loop_losses(node0, 12), abs=FLOAT64_AGREEMENT)
    # each node's run directory holds the checkpoint of the stage it ran
    assert sorted(p.name for p in ckpt.latest_checkpoint(node0 / "checkpoints").glob("*.pt")) == ["stage_0.pt"]
    assert sorted(p.name for p in ckpt.latest_checkpoint(node1 / "checkpoints").glob("*.pt")) == ["stage_1.pt"]


"""Tensor parallelism x pipeline: 2 (TP) x 2 (PP) gloo processes give the unsplit model's loss and
every gradient (core.training.engine.tensor_parallel).

One spawn of 4 ranks on the mesh ("dp_replicate", "dp_shard", "pp", "tp") = (1, 1, 2, 2) runs one
1F1B step of a tiny GPT, split in two pipeline stages whose blocks are split over two processes
each, in float64 and then in fp32, from the same initial weights; each rank gathers its gradients
whole, in the model's order. The reference is the whole GPT, one backward of the mean loss over the
micro-batches.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from core.model.config import GPTConfig
from core.model.gpt import GPT
from core.training.engine import checkpoint as ckpt
from core.training.engine.stages import TIED_COPY, TIED_OWNER
from core.training.engine.tensor_parallel import (
    qkv_order,
    tensor_parallel_refusal,
    to_head_order,
    to_model_order,
)
from core.training.launcher import resume_run, start_run, wait_run
from core.training.metrics import read_metrics
from core.training.plan_file import read_plan_file
from core.training.runner import prepare_new_run
from tests.core.training.engine.spawn_support import free_port, run_ranks, token_batch
from tests.core.training.support import (
    FLOAT64_AGREEMENT,
    TWO_STAGES,
    bare_loop,
    compute_dtype,
    losses,
    tiny_config,
)

CONFIG = GPTConfig(n_layer=2, n_head=4, d_model=16, vocab_size=32, seq_len=8)
MICRO_BATCHES, STAGES, TP, SEED = 4, 2, 2, 7
CUTS = (("embed", "h.0"), ("h.1", "ln_f", "lm_head"))
DTYPES = ("float64", "float32")
# The gaps measured (AMD EPYC; the loss's relative difference, and the largest difference of any
# gradient element over that gradient's largest element): float64 loss 0, gradients 5.6e-16; fp32
# loss 0, gradients 2.9e-7 (the group adds a row-split projection's partial sums in another order
# than one matmul does). Asserted: float64 at 1e-10 (rounding alone; a head or a row in the wrong
# place is O(1)), fp32 at the 1e-5, 35 times the gap seen.
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    return token_batch(CONFIG.vocab_size, CONFIG.seq_len, MICRO_BATCHES, SEED)


def _worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B

    from core.model.gpt import lm_loss
    from core.training.engine.data_parallel import MeshPosition, build_mesh, full
    from core.training.engine.numerics import DTYPES as TORCH_DTYPES
    from core.training.engine.numerics import default_dtype
    from core.training.engine.stages import StageLayout, build_full_model, slice_stages
    from core.training.engine.tensor_parallel import parallelize_stage

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=STAGES * TP)
    position = MeshPosition.of_rank(rank, 1, STAGES, TP)
    mesh = build_mesh(position, zero=0)
    layouts = [StageLayout(i, "cpu", layers) for i, layers in enumerate(CUTS)]
    inputs, targets = _batch()
    results = {}
    try:
        for name in DTYPES:
            with default_dtype(TORCH_DTYPES[name]):
                module = slice_stages(build_full_model(CONFIG, SEED), layouts, untie=True)[position.stage]
                parallelize_stage(module, mesh["tp"])
                stage = PipelineStage(module, position.stage, STAGES, torch.device("cpu"),
                                      group=mesh["pp"].get_group())
                schedule = Schedule1F1B(stage, n_microbatches=MICRO_BATCHES, loss_fn=lm_loss)
                losses: list[torch.Tensor] = []
                if position.stage == 0:
                    schedule.step(inputs)
                else:
                    schedule.step(target=targets, losses=losses)
                grads = {n: to_model_order(n, full(p.grad), TP) for n, p in module.named_parameters()}
            results[name] = {"loss": torch.stack(losses).mean().item() if losses else None, "grads": grads}
            dist.barrier()
        torch.save(results, Path(out_dir) / f"rank_{rank}.pt")
    finally:
        dist.destroy_process_group()



def _reference(dtype: str) -> tuple[float, dict[str, torch.Tensor]]:
    from core.model.gpt import lm_loss
    from core.training.engine.numerics import DTYPES as TORCH_DTYPES
    from core.training.engine.numerics import default_dtype
    from core.training.engine.stages import build_full_model

    with default_dtype(TORCH_DTYPES[dtype]):
        model = build_full_model(CONFIG, SEED)
        inputs, targets = _batch()
        loss = torch.stack([lm_loss(model(x), y) for x, y in zip(inputs.split(1), targets.split(1))]).mean()
        loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.slow  # spawns four processes
def test_two_by_two_tensor_and_pipeline_parallel_equals_the_unsplit_model(tmp_path):
    run_ranks(_worker, (free_port(), str(tmp_path)), STAGES * TP)
    parts = [torch.load(tmp_path / f"rank_{rank}.pt", weights_only=True) for rank in range(STAGES * TP)]
    for dtype in DTYPES:
        loss, expected = _reference(dtype)
        tolerance = TOLERANCE[dtype]
        # ranks 2 and 3: the last stage's two processes, each with the whole loss
        assert [part[dtype]["loss"] for part in parts[2:]] == [pytest.approx(loss, rel=tolerance)] * TP
        for tp in range(TP):  # each process of a group holds the same whole gradients
            grads: dict[str, torch.Tensor] = {}
            for part in (parts[tp], parts[TP + tp]):
                for name, grad in part[dtype]["grads"].items():
                    param = name.replace(TIED_COPY, TIED_OWNER)  # the head's copy of the tied weight
                    grads[param] = grads[param] + grad if param in grads else grad
            assert set(grads) == set(expected)
            for name, grad in expected.items():
                torch.testing.assert_close(grads[name], grad, rtol=tolerance,
                                           atol=tolerance * float(grad.abs().max()), msg=f"{dtype} {name}")


def test_the_fused_projection_goes_to_head_order_and_back():
    rows = torch.arange(12.0)  # [q; k; v], 4 rows each, 2 heads a process
    head_order = to_head_order("h.0.attn.c_attn.weight", rows, 2)
    assert head_order.tolist() == [0, 1, 4, 5, 8, 9, 2, 3, 6, 7, 10, 11]  # process 0: q_0 k_0 v_0
    assert torch.equal(to_model_order("h.0.attn.c_attn.weight", head_order, 2), rows)
    assert torch.equal(to_head_order("h.0.mlp.c_fc.weight", rows, 2), rows)  # only the fused projection
    assert qkv_order(12, 1).tolist() == list(range(12))


def test_a_model_that_cannot_split_is_refused_in_one_line():
    assert tensor_parallel_refusal(CONFIG, 1) is None and tensor_parallel_refusal(CONFIG, 4) is None
    assert tensor_parallel_refusal(CONFIG, 3) == "--tensor-parallel 3 must divide the model's heads (4) and width (16)"


def _write_tp_plan(path: Path, groups: tuple[list[str], ...] = (["cpu"], ["cpu#3"]), zero: int = 0) -> Path:
    """TWO_STAGES on tensor-parallel groups of 2, each named by its first device (replica order): by
    default one replica, on (cpu, cpu#2) and (cpu#3, cpu#4)."""
    stages = [{"device": group[0], "devices": group, "layers": layers}
              for group, (_, layers) in zip(groups, TWO_STAGES, strict=True)]
    path.write_text(json.dumps({"status": "optimal", "tensor_parallel": TP, "data_parallel": len(groups[0]),
                                "zero": zero, "stages": stages}))
    return path


def _run(tmp_path: Path, corpus: Path, steps: int, devices: str, plan: Path, replicas: int = 1,
         zero: int = 0) -> Path:
    """A finished run of gpt-nano (4 micro-batches a step) on tensor-parallel groups of 2, in float64."""
    config = replace(tiny_config(corpus, engine="pipeline", steps=steps, devices=devices, checkpoint_interval=3,
                                 eval_interval=3), tensor_parallel=TP)
    config = replace(config, setup=replace(config.setup, micro_batches=4, data_parallel=replicas, zero=zero))
    with compute_dtype("float64"):
        run_dir = start_run(config, tmp_path / "run", read_plan_file(plan), emit=lambda _: None).run_dir
        status = wait_run(run_dir, timeout_s=300)
    assert status.state == "finished", (run_dir / "train.log").read_text()[-3000:]
    return run_dir


def assert_trains_as_the_plain_loop(run_dir: Path, steps: int) -> None:
    """Losses, gradient norms and the last checkpoint's weights (whole, in the model's order) are
    the plain loop's over the whole model, to float64's rounding (see the numbers below)."""
    with compute_dtype("float64"):
        expected_losses, expected_norms, expected_state = bare_loop(run_dir, steps)
    assert losses(run_dir) == pytest.approx(expected_losses, rel=FLOAT64_AGREEMENT)
    norms = [row["grad_norm"] for row in read_metrics(run_dir / "metrics.jsonl")]
    assert norms == pytest.approx(expected_norms, rel=FLOAT64_AGREEMENT)
    latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
    assert sorted(path.name for path in latest.glob("*.pt")) == ["stage_0.pt", "stage_1.pt"]
    state = ckpt.load_model_state(latest)
    GPT(_gpt_of(run_dir)).to(torch.float64).load_state_dict(state, strict=True)
    for name, tensor in expected_state.items():
        if name in state:  # the tied head is the embedding's
            torch.testing.assert_close(state[name], tensor, rtol=FLOAT64_AGREEMENT, atol=FLOAT64_AGREEMENT)
    qkv = torch.load(latest / "stage_0.pt", weights_only=True)["optimizer"]["state"]["h.0.attn.c_attn.weight"]
    assert qkv["exp_avg"].shape == state["h.0.attn.c_attn.weight"].shape  # the optimizer's shards gathered


# The runs against the plain loop (AMD EPYC, 6 steps; relative gaps, weights over each tensor's largest
# element): float64 loss 1.9e-16, gradient norm 1.5e-15, weights 3.9e-13, the resume's losses equal
# to the last bit; fp32 loss 1.8e-7, gradient norm 7.6e-7, weights 1.8e-4 (Adam's normalised steps
# carry the rounding of tiny gradients into the weights). So float64 is asserted at FLOAT64_AGREEMENT.
@pytest.mark.slow  # a 4-process torchrun run and its resume
def test_a_tensor_parallel_run_trains_as_the_unsplit_model_and_resumes_exactly(tmp_path, corpus):
    """train --devices 4xcpu --tensor-parallel 2: 2 stages x 2; a resume from the step-3 checkpoint
    takes steps 4 to 6 as the uninterrupted run took them."""
    steps = 6
    run_dir = _run(tmp_path, corpus, steps, "4xcpu:1GiB", _write_tp_plan(tmp_path / "plan.json"))
    # ---- t recorded: the config, the plan, the report
    assert json.loads((run_dir / "config.json").read_text())["config"]["tensor_parallel"] == TP
    assert json.loads((run_dir / "plan.json").read_text())["tensor_parallel"] == TP
    assert json.loads((run_dir / "report.json").read_text())["tensor_parallel"] == TP
    assert_trains_as_the_plain_loop(run_dir, steps)
    # ---- resume from step 3
    first = losses(run_dir)
    shutil.rmtree(ckpt.latest_checkpoint(run_dir / "checkpoints"))
    with compute_dtype("float64"):
        resume_run(run_dir)
        assert wait_run(run_dir, timeout_s=300).state == "finished", (run_dir / "train.log").read_text()[-3000:]
    assert [row["step"] for row in read_metrics(run_dir / "metrics.jsonl")] == list(range(1, steps + 1))
    assert losses(run_dir) == pytest.approx(first, rel=FLOAT64_AGREEMENT)


@pytest.mark.slow  # an 8-process torchrun run: 49 s alone, 83 s beside the other tests (2 shared cores)
def test_fsdp2_replicas_of_a_tensor_parallel_pipeline_train_as_the_unsplit_model(tmp_path, corpus):
    """2 replicas (ZeRO 3) x 2 stages x 2 tensor-parallel processes on one mesh: the plain loop's
    training. Also measured: ZeRO 0 and 3 with one stage (4 processes), ZeRO 1 with two, the same
    gaps as the 4-process run's to the digits shown."""
    groups = (["cpu", "cpu#5"], ["cpu#3", "cpu#7"])  # replica r runs on groups[stage][r] and the next device
    plan = _write_tp_plan(tmp_path / "plan.json", groups, zero=3)
    run_dir = _run(tmp_path, corpus, 3, "8xcpu:1GiB", plan, replicas=2, zero=3)
    assert all(len(row["stage_sync_s"]) == 2 for row in read_metrics(run_dir / "metrics.jsonl"))
    assert_trains_as_the_plain_loop(run_dir, 3)


@pytest.mark.slow  # two runs prepared: graphs measured, the corpus read, plans solved
def test_without_a_plan_the_planner_prices_the_groups(tmp_path, corpus):
    """train --devices 4xcpu --tensor-parallel 2 with no --plan: the planner's plan (cost model v3) on
    groups of two, named by their first devices, each device holding about half a block's weights."""
    config = tiny_config(corpus, engine="pipeline", devices="4xcpu:1GiB")

    def planned(t: int, devices: str):
        run = prepare_new_run(replace(config, devices=tiny_config(corpus, devices=devices).devices,
                                      tensor_parallel=t), tmp_path / f"run-{t}", emit=lambda _: None)
        return run.plan

    split, whole = planned(TP, "4xcpu:1GiB"), planned(1, "2xcpu:1GiB")
    assert split.tensor_parallel == TP and whole.tensor_parallel == 1
    assert [stage.device for stage in split.stages] in (["cpu"], ["cpu", "cpu#3"])  # leaders of (cpu, cpu#2), (cpu#3, cpu#4)
    assert json.loads((tmp_path / f"run-{TP}" / "plan.json").read_text())["tensor_parallel"] == TP
    # the blocks' weights divide over the group; embedding, head and norms stay whole on each device
    assert sum(s.params for s in split.stages) == sum(s.params for s in whole.stages)
    assert sum(s.weight_bytes for s in split.stages) < sum(s.weight_bytes for s in whole.stages)


def _gpt_of(run_dir: Path) -> GPTConfig:
    from core.training.engine.context import RunContext

    gpt = RunContext.load(run_dir).gpt
    assert gpt is not None
    return gpt

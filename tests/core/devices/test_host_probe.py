"""The host's speed probe runs what training runs: a block's forward and backward in the run's precision,
rated in the planner's FLOPs and by the CPU time it got (docs/design.md, "Host speed")."""

from __future__ import annotations

import pytest
import torch

from core.devices import host_probe
from core.devices import host_speed as hs
from core.model.graph import build_layer_graph, graph_layers
from core.model.model_spec import resolve_model
from core.planning.setup import TrainingSetup

SMALL = hs.BlockShape(2, 16, 64, 256)


@pytest.fixture(autouse=True)
def one_thread():
    """A stage process's one thread (tiny ops on two threads of a busy machine wait on each other);
    the probe's blocks are dropped afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    host_probe.release()


def _matmul_dtypes(precision: str) -> set[torch.dtype]:
    """The dtypes the probe block's linear layers compute in."""
    work = host_probe._workload(SMALL, precision)
    dtypes: set[torch.dtype] = set()
    handles = [module.register_forward_hook(lambda _module, _inputs, out: dtypes.add(out.dtype))
               for module in work.block.modules() if isinstance(module, torch.nn.Linear)]
    try:
        work.run()
    finally:
        for handle in handles:
            handle.remove()
    return dtypes


def test_the_probe_multiplies_in_the_runs_precision_forward_and_backward():
    assert _matmul_dtypes("bf16") == {torch.bfloat16}  # autocast over fp32 weights, as a bf16 run trains
    assert _matmul_dtypes("fp32") == {torch.float32}


def test_the_probe_counts_the_flops_the_planner_counts_for_a_gpt_block():
    # the planner's layer FLOPs (attention's included) are what a rate in TFLOP/s divides; a step's work is 3x
    setup = TrainingSetup(micro_batch_size=2, seq_len=32, micro_batches=1, precision="fp32")
    block = next(layer for layer in graph_layers(build_layer_graph(resolve_model("gpt-nano"), setup))
                 if layer.name == "h.0")
    nano = hs.BlockShape(2, 32, 128, 512)
    work = host_probe._workload(nano, "fp32")
    assert nano.forward_flops == block.flops and work.flops == 3 * block.flops
    assert work.flops > nano.matmul_flops  # attention's besides the four matmuls


def test_one_thread_is_rated_by_its_own_cpu_time_not_the_wait_for_a_core():
    # 4 s of wall time of which the thread ran 1 s: the other 3 s it waited behind other work
    assert host_probe._rate(8e9, threads=1, wall_s=4.0, process_cpu_s=1.0, thread_cpu_s=1.0) == 8e9
    # several threads: the process's CPU time, never above threads x the wall-clock rate
    assert host_probe._rate(8e9, threads=2, wall_s=4.0, process_cpu_s=2.0, thread_cpu_s=1.0) == 4e9
    assert host_probe._rate(8e9, threads=2, wall_s=4.0, process_cpu_s=8.0, thread_cpu_s=4.0) == 2e9


def test_a_real_short_run_in_each_precision():
    for precision in ("fp32", "bf16"):
        assert hs._block_tflops(SMALL, precision, threads=1, seconds=0.0) > 0
    assert hs._block_tflops(hs.BlockShape(1, 8, 200, 300), "fp32", threads=1, seconds=0.0) > 0  # 3 heads: 1

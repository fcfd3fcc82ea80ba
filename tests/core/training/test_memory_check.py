"""Before launch: each stage's predicted peak against the memory that will hold it; OOM in one line."""

from dataclasses import replace

import pytest

from core.planning.plan import Plan, StageCost
from core.training.memory_check import (
    HolderMemory,
    is_out_of_memory,
    memory_shortfall,
    out_of_memory_line,
)

GIB = 1024**3


def stage(devices, gib):
    """A stage whose predicted peak is `gib` GiB per device (all of it weights, for simplicity)."""
    return StageCost(device=devices[0], devices=tuple(devices), layers=("h.0",), layer_indices=(0,), compute_s=0.1,
                     comm_s=0.0, inflight_micro_batches=1, params=1, weight_bytes=gib * GIB, grad_bytes=0.0,
                     optimizer_bytes=0.0, activation_bytes=0.0, budget_bytes=80 * GIB)


def plan(*stages):
    return Plan(status="optimal", solver="exact", stages=tuple(stages), objective_s=1.0, lower_bound_s=1.0,
                micro_batches=8)


def test_simulated_gpus_are_held_by_the_host_all_together():
    # llama-3-8b in the shape of issue 19: two simulated GPUs, the host with 23.5 GiB available
    both = plan(stage(["A100-80GB"], 16), stage(["RTX4090"], 12))
    line = memory_shortfall(both, HolderMemory(host_available_bytes=int(23.5 * GIB)))
    assert line == ("stage 2 of 2 (RTX4090, executed by this host's CPU) needs 12.00 GiB at its predicted peak, "
                    "28.00 GiB with the stages before it on this host; the host has 23.50 GiB available: "
                    "4.50 GiB short")
    alone = memory_shortfall(plan(stage(["A100-80GB"], 32)), HolderMemory(host_available_bytes=int(23.5 * GIB)))
    assert alone == ("stage 1 of 1 (A100-80GB, executed by this host's CPU) needs 32.00 GiB at its predicted "
                     "peak; the host has 23.50 GiB available: 8.50 GiB short")
    assert memory_shortfall(both, HolderMemory(host_available_bytes=29 * GIB)) is None


def test_the_host_itself_and_every_replica_count():
    replicas = plan(stage(["cpu#0", "cpu#1"], 3), stage(["cpu#2", "cpu#3"], 3))
    line = memory_shortfall(replicas, HolderMemory(host_available_bytes=10 * GIB))
    assert line is not None and line.startswith("stage 2 of 2 (cpu#3, executed by this host)")
    assert "12.00 GiB with the stages before it" in line and "2.00 GiB short" in line


def test_every_process_of_a_tensor_parallel_group_counts_on_the_host():
    from dataclasses import replace

    pairs = replace(plan(stage(["cpu"], 3), stage(["cpu#3"], 3)), tensor_parallel=2)  # (cpu, cpu#2), (cpu#3, cpu#4)
    assert memory_shortfall(pairs, HolderMemory(host_available_bytes=13 * GIB)) is None
    line = memory_shortfall(pairs, HolderMemory(host_available_bytes=10 * GIB))
    assert line is not None and "12.00 GiB with the stages before it" in line and "2.00 GiB short" in line


def test_a_real_gpu_is_checked_against_its_free_memory_and_an_unknown_one_is_not():
    gpus = plan(stage(["cuda:0"], 30), stage(["cuda:1"], 30))
    holders = HolderMemory(host_available_bytes=GIB, gpu_free_bytes={"cuda:0": 40 * GIB, "cuda:1": 20 * GIB})
    assert memory_shortfall(gpus, holders) == ("stage 2 of 2 (cuda:1) needs 30.00 GiB at its predicted peak; "
                                               "cuda:1 has 20.00 GiB free: 10.00 GiB short")
    assert memory_shortfall(gpus, HolderMemory(host_available_bytes=GIB, gpu_free_bytes={"cuda:1": None})) is None


def test_an_infeasible_plan_has_no_stages_to_check():
    empty = Plan(status="infeasible", solver="exact", stages=(), objective_s=None, lower_bound_s=1.0,
                 micro_batches=8, reason="short")
    assert memory_shortfall(empty, HolderMemory(host_available_bytes=0)) is None


@pytest.mark.parametrize(("error", "device", "expected"), [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:116] data. DefaultCPUAllocator: can't allocate memory: you tried "
                  "to allocate 4294967296 bytes. Error code 12 (Cannot allocate memory)"), "cpu",
     "stage 1 of 2 (A100-80GB) ran out of the host's memory allocating 4.00 GiB: "),
    (type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.15 "
                                                     "GiB total capacity)"), "cuda:0",
     "stage 1 of 2 (A100-80GB) ran out of cuda:0's memory allocating 2.00 GiB: "),
    (MemoryError(), "cpu", "stage 1 of 2 (A100-80GB) ran out of the host's memory: "),
])
def test_an_allocator_error_becomes_one_readable_line(error, device, expected):
    assert is_out_of_memory(error)
    line = out_of_memory_line(error, ["stage 1 of 2 (A100-80GB)"], device)
    assert line.startswith(expected) and "\n" not in line and "enforce" not in line


def test_other_errors_are_not_out_of_memory():
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("bad"))


CPU_OOM = ("[enforce fail at alloc_cpu.cpp:116] data. DefaultCPUAllocator: can't allocate memory: you tried to "
           "allocate 1073741824 bytes. Error code 12 (Cannot allocate memory)")


@pytest.fixture(scope="module")
def two_stage_run(tmp_path_factory):
    from core.training.plan_file import read_plan_file
    from core.training.runner import prepare_new_run
    from tests.core.training.support import tiny_config, write_corpus, write_plan

    root = tmp_path_factory.mktemp("oom")
    config = tiny_config(write_corpus(root / "corpus.txt", lines=500))
    return prepare_new_run(config, root / "run", read_plan_file(write_plan(root / "plan.json")),
                           emit=lambda line: None).paths


def test_a_stage_process_that_runs_out_of_memory_fails_the_run_in_one_readable_line(two_stage_run):
    from core.training.engine.pipeline_worker import _record_error
    from core.training.job import _worker_error

    _record_error(two_stage_run.root, 1, RuntimeError(CPU_OOM))
    line = str(_worker_error(two_stage_run, 1))
    assert line.startswith("rank 1: stage 2 of 2 (cpu#2) ran out of the host's memory allocating 1.00 GiB: ")
    assert "enforce" not in line and "DefaultCPUAllocator" not in line and "\n" not in line


def test_the_local_engine_running_out_of_memory_says_so_in_one_line(two_stage_run):
    from core.training.job import _error_line

    line = _error_line(two_stage_run, RuntimeError(CPU_OOM))
    assert line.startswith("the 2 stages of the local engine ran out of the host's memory allocating 1.00 GiB: ")
    assert _error_line(two_stage_run, ValueError("bad")) == "ValueError: bad"


def test_a_worker_killed_by_the_kernel_says_it_was_most_likely_memory(two_stage_run):
    from core.training.job import _worker_error

    for report in two_stage_run.errors.glob("rank_*.json"):
        report.unlink()
    with open(two_stage_run.log, "a") as log:
        log.write("torch.distributed.elastic.multiprocessing.api: failed (exitcode: -9) local_rank: 1 (pid: 42)\n"
                  "[1]:\n  exitcode  : -9 (pid: 42)\n  error_file: <N/A>\n  traceback : Signal 9 (SIGKILL) "
                  "received by PID 42\n")
    assert "out-of-memory killer" in str(_worker_error(two_stage_run, 1))


def test_real_gpus_free_memory_comes_from_nvml_by_cuda_index():
    from core.devices import nvml_gateway as nv
    from core.devices.fake_nvml import FakeNvml
    from core.devices.inventory import discover, gpu_free_bytes

    gateway = nv.NvmlGateway(FakeNvml(2))
    total = {gpu.torch_index: gpu.memory_total_bytes for gpu in discover(gateway, cuda_uuids=lambda: None).gpus}
    free = gpu_free_bytes(gateway, cuda_uuids=lambda: None)  # read now: the fake's use moves
    assert set(free) == set(total) == {0, 1} and all(0 < free[i] < total[i] for i in free)
    assert gpu_free_bytes(nv.NvmlGateway(FakeNvml(0, init_error=nv.LIBRARY_NOT_FOUND))) == {}


def test_a_chunked_run_warns_once_a_device_and_a_pipeline_once_a_stage():
    from core.training.memory_check import memory_overruns, memory_subjects

    # ZBV over cpu and cpu#2: stages 0 and 3 on cpu, 1 and 2 on cpu#2; each chunk carries its device's
    # predicted 100 bytes and measured peak (cpu 120, 20% above; cpu#2 100, within)
    chunked = replace(plan(*(stage([device], 1) for device in ("cpu", "cpu#2", "cpu#2", "cpu"))),
                      schedule="zbv", chunks=2)
    lines = memory_overruns([100.0] * 4, [120.0, 100.0, 100.0, 120.0], memory_subjects(chunked))
    assert lines == {0: "device cpu, its chunks together: measured peak memory 120 B is 20% above its "
                        "predicted 100 B: the memory model under-counts it"}
    pipeline = replace(chunked, schedule=None, chunks=1)
    assert list(memory_overruns([100.0] * 4, [120.0, 100.0, 100.0, 120.0], memory_subjects(pipeline))) == [0, 3]

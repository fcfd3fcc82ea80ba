"""Predicted vs measured per stage: with and without data-parallel replicas, and with
simulated GPUs that the host CPU executes (predicted at the host's speed)."""

from dataclasses import replace

import pytest

from core.planning.plan import Plan, StageCost
from core.training.execution import DeviceExecution
from core.training.report import RunReport, format_report, stage_report


def _stage(group, compute_s=0.01, comm_s=0.002, sync_s=0.0):
    return StageCost(device=group[0], devices=tuple(group), layers=("a", "b"), layer_indices=(0, 1),
                     compute_s=compute_s, comm_s=comm_s, inflight_micro_batches=1, params=10, weight_bytes=1.0,
                     grad_bytes=1.0, optimizer_bytes=1.0, activation_bytes=1.0, budget_bytes=100, sync_s=sync_s)


def _plan(replicas):
    groups = [[f"cpu#{r * 2 + s}" for r in range(replicas)] for s in range(2)]
    return Plan(status="optimal", solver="exact", objective_s=1.0, lower_bound_s=0.5, micro_batches=8,
                data_parallel=replicas,
                stages=tuple(_stage(group, sync_s=0.05 if replicas > 1 else 0.0) for group in groups))


def _rows(steps, sync):
    rows = []
    for step in range(1, steps + 1):
        row = {"step": step, "step_time_s": 0.5, "stage_compute_s": [0.08, 0.04], "stage_idle_s": [0.1, 0.2]}
        if sync:
            row["stage_sync_s"] = [0.03 + step / 1000, 0.02]
        rows.append(row)
    return rows


def test_two_replicas_divide_compute_by_their_own_micro_batches_and_report_sync():
    report = stage_report(_plan(2), _rows(6, sync=True), micro_batches=8)  # 4 a replica
    assert isinstance(report, RunReport)
    first, second = report.stages
    assert first.measured_compute_s == pytest.approx(0.02) and second.measured_compute_s == pytest.approx(0.01)
    assert first.devices == ("cpu#0", "cpu#2") and first.group == "cpu#0 + cpu#2"
    assert first.predicted_sync_s == 0.05
    assert first.measured_sync_s == pytest.approx(0.0345)  # median of steps 3..6 (after warmup)
    assert second.measured_sync_s == pytest.approx(0.02)
    assert first.measured_over_predicted == pytest.approx(2.0) and report.synced
    text = format_report(report)
    assert "sync ms/step predicted" in text and "cpu#0+cpu#2" in text and "50.00" in text and "34.50" in text
    assert "runs on" not in text  # nothing simulated


def test_one_replica_reports_no_sync():
    report = stage_report(_plan(1), _rows(6, sync=False), micro_batches=8)
    assert report.stages[0].measured_compute_s == pytest.approx(0.01)
    assert all(s.predicted_sync_s is None and s.measured_sync_s is None for s in report.stages)
    assert not report.synced and report.predicted_step_s == 1.0 and report.datasheet_step_s is None
    assert "sync" not in format_report(report)


def _simulated_plan():
    # two simulated GPUs planned at 100 and 50 TFLOP/s: 1 ms and 2 ms of compute per micro-batch
    return Plan(status="optimal", solver="exact", objective_s=0.0099, lower_bound_s=0.001, micro_batches=4,
                stages=(_stage(["A100-80GB"], compute_s=0.001, comm_s=0.0), _stage(["RTX4090"], compute_s=0.002,
                                                                                   comm_s=0.0)))


def _on_host(device, planned_tflops, host_tflops=0.01):
    return DeviceExecution(device=device, simulated=device, runs_on="cpu", planned_tflops=planned_tflops,
                           run_tflops=host_tflops, source="the host's matmul")


def test_simulated_gpus_on_the_host_are_predicted_at_the_hosts_speed_beside_the_datasheet():
    executions = [_on_host("A100-80GB", 100.0), _on_host("RTX4090", 50.0)]
    report = stage_report(_simulated_plan(), _rows(6, sync=False), micro_batches=4, executions=executions)
    first, second = report.stages
    # the same work at 0.01 TFLOP/s instead of 100 (and 50): 10 000 (5 000) times longer
    assert first.predicted_compute_s == pytest.approx(10.0) and second.predicted_compute_s == pytest.approx(10.0)
    assert (first.datasheet_compute_s, second.datasheet_compute_s) == (0.001, 0.002)
    assert first.runs_on_note == "runs on host CPU (simulated A100-80GB)"
    assert report.simulated == ("A100-80GB", "RTX4090")
    # the step predicted as it runs: sum + (m - 1) * max of the host stage times, the plan's beside it
    assert report.predicted_step_s == pytest.approx(20.0 + 3 * 10.0) and report.datasheet_step_s == 0.0099
    text = format_report(report)
    assert "runs on host CPU (simulated A100-80GB)" in text and "datasheet ms  note" in text
    assert "10000.00" in text and "1.00" in text  # host prediction and datasheet prediction, in ms
    assert "predicted on A100-80GB, RTX4090 (datasheet)" in text


def test_a_discovered_gpu_and_the_host_keep_the_plans_prediction():
    plan = Plan(status="optimal", solver="exact", objective_s=0.01, lower_bound_s=0.001, micro_batches=4,
                stages=(_stage(["cuda:0"], compute_s=0.001), _stage(["cpu"], compute_s=0.003)))
    executions = [DeviceExecution("cuda:0", None, "cuda:0", 100.0), DeviceExecution("cpu", None, "cpu", 0.05)]
    report = stage_report(plan, _rows(6, sync=False), micro_batches=4, executions=executions)
    assert [s.predicted_compute_s for s in report.stages] == [0.001, 0.003]
    assert all(s.simulated is None and s.runs_on_note is None for s in report.stages)
    assert report.predicted_step_s == 0.01 and "runs on" not in format_report(report)


def test_a_run_that_did_not_record_the_hosts_speed_says_so_rather_than_guess():
    executions = [_on_host("A100-80GB", 100.0, host_tflops=None), _on_host("RTX4090", 50.0, host_tflops=None)]
    report = stage_report(_simulated_plan(), _rows(6, sync=False), micro_batches=4, executions=executions)
    assert all(s.predicted_compute_s is None and s.simulated for s in report.stages)
    assert report.predicted_step_s is None and report.datasheet_step_s == 0.0099


def test_the_report_json_carries_the_ratios_and_the_note():
    executions = [_on_host("A100-80GB", 100.0), _on_host("RTX4090", 50.0)]
    record = stage_report(_simulated_plan(), _rows(6, sync=False), 4, executions).to_dict()
    assert record["stages"][0]["runs_on"] == "runs on host CPU (simulated A100-80GB)"
    assert record["stages"][0]["measured_over_predicted"] == pytest.approx(0.02 / 10.0)
    assert record["step_measured_over_predicted"] == pytest.approx(0.5 / 50.0)


def test_a_run_prepared_before_executions_were_recorded_still_names_its_simulated_gpus():
    from core.training.execution import executions_from_record

    old = {"devices": [{"name": "A100-80GB", "kind": "A100-80GB", "memory_bytes": 1, "tflops": 7.8,
                        "bandwidth_gbps": 32.0, "total_memory_bytes": 2},
                       {"name": "cpu", "kind": "cpu", "memory_bytes": 1, "tflops": 0.05, "bandwidth_gbps": 10.0}]}
    simulated, host = executions_from_record(old)
    assert (simulated.simulated, simulated.runs_on, simulated.run_tflops) == ("A100-80GB", "cpu", None)
    assert simulated.on_host and not host.on_host and host.simulated is None


def test_each_stage_reports_predicted_and_measured_peak_memory():
    rows = _rows(4, sync=False)
    for row in rows:
        row["stage_measured_peak_memory_bytes"] = [3 * 2**20, 6 * 2**20]
        row["stage_measured_memory_source"] = ["tensors", "cuda"]
    plan = _plan(1)  # each stage predicts 4 bytes (1 + 1 + 1 + 1) within a budget of 100
    report = stage_report(plan, rows, micro_batches=8)
    first, second = report.stages
    assert first.predicted_memory_bytes == 4.0 and first.budget_bytes == 100
    assert (first.measured_peak_memory_bytes, first.measured_memory_source) == (3 * 2**20, "tensors")
    assert second.measured_memory_source == "cuda"
    assert first.memory_measured_over_predicted == pytest.approx(3 * 2**20 / 4)
    record = report.to_dict()["stages"][1]  # report.json
    assert record["predicted_memory_bytes"] == 4.0 and record["measured_peak_memory_bytes"] == 6 * 2**20
    assert record["measured_memory_source"] == "cuda"
    assert record["memory_measured_over_predicted"] == pytest.approx(6 * 2**20 / 4)
    assert "measured peak" in format_report(report) and "    3.0" in format_report(report)


def test_a_run_without_tracked_steps_has_no_measured_memory():
    report = stage_report(_plan(1), _rows(4, sync=False), micro_batches=8)
    assert all(s.measured_peak_memory_bytes is None and s.measured_memory_source is None for s in report.stages)
    assert report.to_dict()["stages"][0]["memory_measured_over_predicted"] is None
    assert "measured peak" not in format_report(report)


def test_the_bubble_is_each_rank_s_waiting_share_of_a_step_its_chunks_together():
    """ZBV over 2 ranks x 2 chunks: rank 0 runs stages 0 and 3, rank 1 stages 1 and 2. Predicted:
    1 - m' x (its chunks' compute) / T per rank, averaged; measured: the rank's idle / the step."""
    stages = (_stage(["cpu"], 0.01), _stage(["cpu#2"], 0.02), _stage(["cpu#2"], 0.02), _stage(["cpu"], 0.03))
    plan = Plan(status="optimal", solver="exact", objective_s=0.2, lower_bound_s=0.1, micro_batches=4,
                stages=stages, schedule="zbv", chunks=2)
    rows = [{"step": step, "step_time_s": 0.25, "stage_compute_s": [0.04, 0.08, 0.08, 0.12],
             "stage_idle_s": [0.05, 0.1, 0.1, 0.05]} for step in range(1, 6)]
    report = stage_report(plan, rows, 4, schedule="zbv")
    assert report.predicted_bubble == pytest.approx(((1 - 4 * 0.04 / 0.2) + (1 - 4 * 0.04 / 0.2)) / 2)
    assert report.measured_bubble == pytest.approx((0.05 / 0.25 + 0.1 / 0.25) / 2)
    assert "bubble (mean share of a step a rank waits): predicted 20.0%, measured 30.0%" in format_report(report)


def chunked_run_report() -> RunReport:
    """ZBV over 2 ranks x 2 chunks: rank 0 (cpu) runs stages 0 and 3, rank 1 (cpu#2) stages 1 and 2.
    Each chunk predicts 4 bytes (1 + 1 + 1 + 1) with 100 bytes of budget less its device's other chunk
    (96 written, as core.planning.chunked_costs does); cpu measures 9 bytes, cpu#2 6."""
    stages = tuple(replace(_stage([device]), budget_bytes=96) for device in ("cpu", "cpu#2", "cpu#2", "cpu"))
    plan = Plan(status="optimal", solver="exact", objective_s=0.2, lower_bound_s=0.1, micro_batches=4,
                stages=stages, schedule="zbv", chunks=2)
    rows = [{"step": step, "step_time_s": 0.25, "stage_compute_s": [0.04] * 4, "stage_idle_s": [0.05] * 4,
             "stage_measured_peak_memory_bytes": [9, 6, 6, 9], "stage_measured_memory_source": ["tensors"] * 4}
            for step in range(1, 6)]
    return stage_report(plan, rows, 4, schedule="zbv")


def test_a_chunked_run_reports_memory_per_device_its_chunks_together():
    """A device predicts its chunks' 8 bytes of its 100, and its measured peak (the rank's, on each of
    its chunks) is compared with that."""
    report = chunked_run_report()
    assert [(s.predicted_memory_bytes, s.budget_bytes) for s in report.stages] == [(8.0, 100)] * 4
    assert [(s.group, s.measured_peak_memory_bytes) for s in report.memory_rows()] == [("cpu", 9), ("cpu#2", 6)]
    assert [s.memory_measured_over_predicted for s in report.memory_rows()] == [9 / 8, 6 / 8]
    lines = format_report(report).splitlines()
    assert lines[-3].startswith("device memory MiB, its chunks together")
    assert lines[-2].split()[0] == "cpu" and lines[-1].split()[0] == "cpu#2" and "0.75x" in lines[-1]

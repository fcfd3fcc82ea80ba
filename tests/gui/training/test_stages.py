"""The Training tab's stage comparison: each group's sync beside the prediction, and a
simulated GPU's stage marked as running on the host, predicted at the host's speed."""

import pytest

from core.training.report import stage_report
from gui.training.stages import (
    DATASHEET_COLUMN,
    PREDICTED_COLUMN,
    RUNS_ON_COLUMN,
    SYNC_COLUMNS,
    StageComparison,
)
from tests.core.training.test_report import _on_host, _plan, _rows, _simulated_plan


def test_a_data_parallel_run_shows_predicted_and_measured_sync(qtbot):
    view = StageComparison()
    qtbot.addWidget(view)
    view.show_report(stage_report(_plan(2), _rows(6, sync=True), micro_batches=8))
    table = view.table
    assert table.item(0, 0).text() == "0: cpu#0 + cpu#2"
    assert [table.item(0, c).text() for c in SYNC_COLUMNS] == ["50.00 ms", "34.50 ms"]
    assert not any(table.isColumnHidden(c) for c in SYNC_COLUMNS)
    view.show_report(stage_report(_plan(1), _rows(6, sync=False), micro_batches=8))
    assert table.item(0, 0).text() == "0: cpu#0"
    assert all(table.isColumnHidden(c) for c in SYNC_COLUMNS)  # nothing to sync with one replica
    assert table.isColumnHidden(RUNS_ON_COLUMN) and table.isColumnHidden(DATASHEET_COLUMN)  # nothing simulated


def test_a_simulated_gpu_stage_says_it_runs_on_the_host_with_the_datasheet_beside(qtbot):
    view = StageComparison()
    qtbot.addWidget(view)
    executions = [_on_host("A100-80GB", 100.0), _on_host("RTX4090", 50.0)]
    view.show_report(stage_report(_simulated_plan(), _rows(6, sync=False), 4, executions))
    table = view.table
    assert not table.isColumnHidden(RUNS_ON_COLUMN) and not table.isColumnHidden(DATASHEET_COLUMN)
    assert table.item(0, RUNS_ON_COLUMN).text() == "host CPU"
    assert "runs on host CPU (simulated A100-80GB)" in table.item(0, RUNS_ON_COLUMN).toolTip()
    assert table.item(0, PREDICTED_COLUMN).text() == "10000.00 ms"  # the host's prediction
    assert "the host's matmul" in table.item(0, PREDICTED_COLUMN).toolTip()
    assert table.item(0, DATASHEET_COLUMN).text() == "1.00 ms"  # the plan's, on the A100's datasheet
    header = table.horizontalHeaderItem(DATASHEET_COLUMN)
    assert header.text() == "Predicted\n(datasheet)"  # short: the GPUs' names cut it (issue 19)
    assert header.toolTip().endswith("datasheet speed: A100-80GB, RTX4090")
    assert view.predicted_bars.opts["height"][0] == 10.0  # the bars draw what runs (seconds)


def test_the_same_report_again_leaves_the_chart_alone_and_a_new_one_redraws_it(qtbot):
    view = StageComparison()
    qtbot.addWidget(view)
    assert all(view.table.isColumnHidden(c) for c in SYNC_COLUMNS)  # drawn empty from the start
    ticks_set = []
    axis = view.chart.getPlotItem().getAxis("bottom")
    set_ticks = axis.setTicks
    axis.setTicks = lambda ticks: (ticks_set.append(ticks), set_ticks(ticks))
    view.show_report(stage_report(_plan(2), _rows(6, sync=True), micro_batches=8))
    view.show_report(stage_report(_plan(2), _rows(6, sync=True), micro_batches=8))  # equal, built anew
    assert len(ticks_set) == 1  # the chart's axes were not repainted for the same figures
    view.show_report(stage_report(_plan(1), _rows(6, sync=False), micro_batches=8))
    assert len(ticks_set) == 2 and view.table.item(0, 0).text() == "0: cpu#0"


def test_each_stage_shows_predicted_and_measured_peak_memory_and_its_budget(qtbot):
    from gui.training.stages import MEMORY_COLUMNS

    rows = _rows(6, sync=False)
    for row in rows:
        row["stage_measured_peak_memory_bytes"] = [2**20, 2**21]
        row["stage_measured_memory_source"] = ["tensors", "tensors"]
    view = StageComparison()
    qtbot.addWidget(view)
    view.resize(1600, 1000)
    plan = _plan(1)  # 4 bytes predicted per stage, budget 100 bytes
    view.show_report(stage_report(plan, rows, micro_batches=8))
    table = view.table
    assert [table.item(1, c).text() for c in MEMORY_COLUMNS] == ["0.0 MiB", "2.0 MiB", "⚠ 524288.00×", "0.0 MiB"]
    assert "measured as tensors" in table.item(1, MEMORY_COLUMNS[1]).toolTip()
    chart = view.memory_chart
    assert list(chart.measured_bars.opts["height"]) == [1.0, 2.0]  # MiB
    assert list(chart.predicted_bars.opts["height"]) == pytest.approx([4 / 2**20] * 2)
    x, y = chart.budget_lines.getData()
    assert list(y) == pytest.approx([100 / 2**20] * 4)  # the budget's line over each stage: on the scale


def test_a_stage_measured_more_than_10_percent_above_its_prediction_is_flagged_with_both_figures(qtbot, tmp_path):
    from gui.training.stages import MEMORY_COLUMNS

    rows = _rows(6, sync=False)
    for row in rows:  # the plan predicts 4 bytes a stage: stage 0 measures 4 (within), stage 1 5 (25% above)
        row["stage_measured_peak_memory_bytes"] = [4, 5]
        row["stage_measured_memory_source"] = ["tensors", "tensors"]
    view = StageComparison()
    qtbot.addWidget(view)
    view.resize(1600, 1000)
    view.show()
    view.show_report(stage_report(_plan(1), rows, micro_batches=8))
    ratio = MEMORY_COLUMNS[2]
    assert view.table.item(0, ratio).text() == "1.00×"
    assert view.table.item(1, ratio).text() == "⚠ 1.25×"
    assert view.memory_warning.isVisible()
    line = view.memory_warning.text()
    assert line.startswith("⚠ stage 2 of 2: measured peak memory 5 B is 25% above its predicted 4 B")
    assert "stage 1" not in line and view.table.item(1, ratio).toolTip() == line[2:]
    view.grab().save(str(tmp_path / "flagged.png"))
    view.show_report(stage_report(_plan(1), _rows(6, sync=False), micro_batches=8))  # nothing measured
    assert not view.memory_warning.isVisible()


def test_a_chunked_run_flags_a_device_once_with_its_chunks_together(qtbot):
    from tests.core.training.test_report import chunked_run_report

    view = StageComparison()
    qtbot.addWidget(view)
    view.show_report(chunked_run_report())  # cpu: 9 bytes measured against its two chunks' 8
    assert view.memory_warning.text().splitlines() == [
        "⚠ device cpu, its chunks together: measured peak memory 9 B is 12% above its predicted 8 B: "
        "the memory model under-counts it"]
    assert list(view.memory_chart.measured_bars.opts["height"]) == pytest.approx([9 / 2**20, 6 / 2**20])
    ticks = view.memory_chart.getPlotItem().getAxis("bottom")._tickLevels[0]
    assert [label for _, label in ticks] == ["cpu", "cpu#2"]  # one pair of bars a device

"""The Training tab's stage comparison shows each group's sync beside the prediction."""

from core.training.report import stage_report
from gui.training.stages import SYNC_COLUMNS, StageComparison
from tests.core.training.test_report import _plan, _rows


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

"""A long heading shrinks with its column instead of pushing the column beside it out of view."""

from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget

from gui.widgets.elided_label import MIN_WIDTH_PX, ElidedLabel

LONG = "gpt-micro-20261130-220022  ·  gpt-micro  ·  pipeline  ·  2 stages on RTX4090 and A100-80GB"


def test_it_asks_for_a_fixed_minimum_where_a_qlabel_asks_for_its_whole_text(qtbot):
    plain, elided = QLabel(LONG), ElidedLabel(LONG)
    qtbot.addWidget(plain)
    qtbot.addWidget(elided)
    assert plain.minimumSizeHint().width() > 3 * MIN_WIDTH_PX
    assert elided.minimumSizeHint().width() == MIN_WIDTH_PX


def test_a_narrow_label_ends_in_an_ellipsis_and_tells_the_whole_text_in_its_tooltip(qtbot):
    row = QWidget()
    qtbot.addWidget(row)
    label = ElidedLabel(LONG)
    QHBoxLayout(row).addWidget(label)
    row.resize(200, 40)
    row.show()
    qtbot.waitExposed(row)
    assert label.width() < 200 and label.shown_text().endswith("…") and len(label.shown_text()) < len(LONG)
    assert label.toolTip() == LONG
    row.resize(1400, 40)
    qtbot.waitUntil(lambda: label.width() > 1000)
    assert label.shown_text() == LONG and label.toolTip() == ""
    label.setText("short")
    assert label.shown_text() == "short" and label.toolTip() == ""

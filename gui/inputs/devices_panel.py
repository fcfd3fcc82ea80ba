"""The device list: this machine's GPUs and host, and simulated catalog GPUs.

Tick a device to plan on it; add simulated GPUs from the catalog and remove
them again. The live monitor plots are a separate view (the main window's
Monitor tab); this panel only says what exists and what is planned on.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.devices.inventory import load_catalog
from core.errors import InputError
from core.planning.front_door import DeviceEntry, speed_and_source
from core.units import format_gib
from gui import theme
from gui.state import AppState

KIND_LABELS = {"gpu": "GPU", "host": "host", "simulated": "sim"}
COLUMNS = ("Device", "Kind", "Memory", "Datasheet", "TFLOP/s")
PEAK_COLUMN = COLUMNS.index("Datasheet")  # the peak figure: the catalog's, or the one typed (editable)
SPEED_COLUMN = COLUMNS.index("TFLOP/s")  # the effective figure the plan uses
MEASURE_TEXT = "Re-measure host speed"
VISIBLE_ROWS = (3, 10)  # the table grows with its rows between these


class DevicesPanel(QWidget):
    """The device table with include ticks, plus add/remove for simulated GPUs."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        for column, tip in ((PEAK_COLUMN, "Datasheet (peak) TFLOP/s for the precision: the catalog's, or the "
                                          "one you typed for a GPU (double-click a GPU's cell to type it)"),
                            (SPEED_COLUMN, "Effective TFLOP/s, as the plan uses them: the datasheet (or measured) "
                                           "figure × an efficiency. Hover a cell for its figures.")):
            header_item = self.table.horizontalHeaderItem(column)
            if header_item is not None:
                header_item.setToolTip(tip)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        # Only a GPU's speed cell is editable (its item flag): double-click or F2 opens it.
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked
                                   | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(40)
        for column in range(1, len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.catalog_box = QComboBox()
        self.catalog_box.addItems(load_catalog().names())
        self.catalog_box.setToolTip("A GPU from the catalog, planned with its datasheet speed and run as a CPU process")
        self.add_button = QPushButton("Add simulated")
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Remove the selected simulated GPU (exclude real devices with their tick)")
        self.note = QLabel()
        self.note.setObjectName("muted")
        self.note.setWordWrap(True)
        self.measure_button = QPushButton(MEASURE_TEXT)
        self.measure_button.setToolTip("Time the host CPU's matmul speed again now (best of many short runs) and "
                                       "keep it instead of the cached figure, which is kept 30 days: one taken "
                                       "while the machine was busy is too low. Same as "
                                       "`python3 main.py devices --measure-host`.")
        self.host_note = QLabel()  # the old and new figure after a re-measure
        self.host_note.setObjectName("muted")
        self.host_note.setWordWrap(True)
        self.host_note.hide()
        buttons = QHBoxLayout()
        buttons.addWidget(self.catalog_box, 1)
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        host_row = QHBoxLayout()
        host_row.addWidget(self.measure_button)
        host_row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        layout.addLayout(host_row)
        layout.addWidget(self.host_note)
        layout.addWidget(self.note)
        self.add_button.clicked.connect(self._add)
        self.remove_button.clicked.connect(self._remove)
        self.measure_button.clicked.connect(self._remeasure)
        state.host_remeasured.connect(self._remeasured)
        self.table.itemChanged.connect(self._item_changed)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        state.devices_changed.connect(self._update_devices)
        state.setup_changed.connect(self._update_devices)
        state.host_speed_changed.connect(self._update_devices)
        self._update_devices()

    def row_of(self, name: str) -> int:
        for row in range(self.table.rowCount()):
            if self._row_name(row) == name:
                return row
        raise KeyError(name)

    def _update_devices(self) -> None:
        selected = self._selected_name()
        self.table.blockSignals(True)
        self.table.setRowCount(len(self.state.devices))
        for row, entry in enumerate(self.state.devices):
            for column, item in enumerate(self._items(entry)):
                self.table.setItem(row, column, item)
        self.table.blockSignals(False)
        self.table.resizeRowsToContents()
        self._fit_height()
        if selected is not None and self.state.device(selected) is not None:
            self.table.selectRow(self.row_of(selected))
        self.note.setText(self.state.inventory_note or "")
        self.note.setVisible(bool(self.state.inventory_note))
        self._update_buttons()

    def _fit_height(self) -> None:
        rows = min(max(self.table.rowCount(), VISIBLE_ROWS[0]), VISIBLE_ROWS[1])
        row_height = self.table.rowHeight(0) if self.table.rowCount() else 26
        self.table.setFixedHeight(self.table.horizontalHeader().height() + rows * row_height + 4)

    def _items(self, entry: DeviceEntry) -> list[QTableWidgetItem]:
        color = theme.device_text_color(self.state.color_slot(entry.name))
        name = QTableWidgetItem(f"● {entry.name}")
        name.setData(Qt.ItemDataRole.UserRole, entry.name)
        name.setForeground(color if entry.included else QColor(theme.STALE))
        name.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsUserCheckable)
        name.setCheckState(Qt.CheckState.Checked if entry.included else Qt.CheckState.Unchecked)
        name.setToolTip(f"{entry.model_name or entry.name}: tick to plan on it")
        font = name.font()
        font.setBold(True)
        name.setFont(font)
        kind = QTableWidgetItem(KIND_LABELS[entry.kind])
        memory = QTableWidgetItem(f"{format_gib(entry.memory_total_bytes)} GiB")  # as its budget bar reads it
        peak, speed = self._speed_items(entry)
        items = [name, kind, memory, peak, speed]
        for item in items[1:]:
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            if item is not kind:  # figures
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if not entry.included:
                item.setForeground(QColor(theme.STALE))
        if entry.kind == "gpu":  # a GPU the catalog does not know gets its speed here (double-click)
            peak.setFlags(peak.flags() | Qt.ItemFlag.ItemIsEditable)
            if entry.peak_tflops(self.state.setup.precision) is None:
                peak.setForeground(QColor(theme.DANGER))
        return items

    def _speed_items(self, entry: DeviceEntry) -> tuple[QTableWidgetItem, QTableWidgetItem]:
        """(datasheet, effective): a typed figure stays as typed beside what the plan makes of it."""
        effective, source = speed_and_source(entry, self.state.setup.precision, self.state.host_peak_tflops,
                                             self.state.host_speed_source)
        typed = entry.user_peak_tflops
        peak_figure = entry.peak_tflops(self.state.setup.precision) if entry.kind != "host" else None
        peak = QTableWidgetItem(f"{peak_figure:.3g}" if peak_figure is not None else (
            "—" if entry.kind == "host" else "unknown"))
        if entry.kind == "host":
            peak.setToolTip("The host has no datasheet figure: its speed is measured (see TFLOP/s)")
        elif typed is not None:
            peak.setToolTip(f"{typed:g} TFLOP/s, typed by hand as this GPU's datasheet figure; the plan uses "
                            f"{source}. Double-click to change it; empty: the catalog's figure")
        else:
            peak.setToolTip(f"{source}." + (" Double-click to type this GPU's datasheet (peak) TFLOP/s by hand"
                                            if entry.kind == "gpu" else ""))
        if typed is not None:
            font = peak.font()
            font.setItalic(True)  # typed, not from the catalog
            peak.setFont(font)
        text = f"{effective:.3g}" if effective is not None else ("measuring…" if entry.kind == "host" else "—")
        speed = QTableWidgetItem(text)  # three significant digits: 125, 66.1, 0.0123
        speed.setToolTip(f"Effective TFLOP/s the planner uses: {source}")
        return peak, speed

    def _selected_name(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return self._row_name(rows[0].row()) if rows else None

    def _row_name(self, row: int) -> str | None:
        """The device name a row shows (kept in its first cell)."""
        item = self.table.item(row, 0)
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def _update_buttons(self) -> None:
        name = self._selected_name()
        entry = self.state.device(name) if name else None
        self.remove_button.setEnabled(entry is not None and entry.kind == "simulated")

    def _item_changed(self, item: QTableWidgetItem) -> None:
        name = self._row_name(item.row())
        if name is None:
            return
        if item.column() == 0:
            self.state.set_included(name, item.checkState() == Qt.CheckState.Checked)
        elif item.column() == PEAK_COLUMN:
            self._speed_typed(name, item.text().strip())

    def _speed_typed(self, name: str, text: str) -> None:
        """A peak TFLOP/s typed into a GPU's cell; empty clears it. Bad text says why, changes nothing."""
        try:
            try:
                speed = float(text) if text else None
            except ValueError:
                raise InputError(f"the speed of {name} must be a number of TFLOP/s, got {text!r}") from None
            self.state.set_peak_tflops(name, speed)
        except InputError as error:
            self._update_devices()  # the cell shows the speed in force again
            self.note.setText(str(error))
            self.note.show()

    def _add(self) -> None:
        try:
            name = self.state.add_simulated(self.catalog_box.currentText())
        except InputError as error:
            self.note.setText(str(error))
            self.note.show()
            return
        self.table.selectRow(self.row_of(name))

    def _remeasure(self) -> None:
        self.measure_button.setEnabled(False)
        self.measure_button.setText("Measuring the host…")
        self.state.remeasure_host()

    def _remeasured(self, text: str) -> None:
        self.measure_button.setEnabled(True)
        self.measure_button.setText(MEASURE_TEXT)
        self.host_note.setText(text)
        self.host_note.show()

    def _remove(self) -> None:
        name = self._selected_name()
        if name is not None:
            self.state.remove_device(name)

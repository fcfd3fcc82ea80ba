"""Budgets you drag: one bar per device, its whole memory, the plan's memory, a handle.

A BudgetBar paints the device's total memory as a track, the current plan's
memory on it stacked as params, grads, optimizer state and activations (with
LoRA and QLoRA also the frozen weights and the quantisation scratch), the
memory above the budget hatched (the plan may not use it) and the budget as
a handle. Drag the handle (or click anywhere on the track) with the mouse, or
focus the bar and use Left/Right (1% steps), PageDown/PageUp (10%) and
Home/End. Every move goes to AppState.set_budget, which re-plans off the GUI
thread; the newest plan comes back through `plan_changed`.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFocusEvent,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
)
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from core.planning.front_door import StageCost
from core.units import MIB, format_bytes, format_gib
from gui import theme
from gui.plan.groups import chunks_of_device, stage_of_device
from gui.state import AppState

HANDLE_GRAB_PX = 8  # how close to the handle a press grabs it
FIGURES_TEMPLATE = "0000.0 GiB │ budget 0000.0 / 0000.0 GiB"
SMALL_STEP = 0.01  # of the device's memory, per arrow key
BIG_STEP = 0.10  # per PageUp/PageDown


def stage_memory(stage: StageCost | None, chunks: Sequence[StageCost] = ()) -> dict[str, float]:
    """The memory kinds of a stage (zeros for a device the plan leaves unused); a chunked plan's
    device holds all its chunks (`chunks`), kind by kind added up."""
    memory = dict.fromkeys(theme.MEMORY_KINDS, 0.0)
    for part in chunks if len(chunks) > 1 else [stage] if stage is not None else []:
        for kind, value in part.memory_parts_bytes.items():
            memory[kind] = memory.get(kind, 0.0) + value
    return memory


def memory_label(kind: str, adapters: bool) -> str:
    """A memory kind's name; with LoRA and QLoRA the trained parameters are the adapters."""
    return theme.ADAPTER_PARAMS_LABEL if adapters and kind == "params" else theme.MEMORY_LABELS[kind]


class BudgetBar(QWidget):
    """One device's memory bar with a draggable, keyboard-movable budget handle."""

    budget_requested = Signal(object)  # bytes, snapped to MiB (object: budgets exceed 2**31)

    def __init__(self, name: str, total_bytes: int, budget_bytes: int, color: QColor,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.total_bytes = max(1, total_bytes)
        self.budget_bytes = budget_bytes
        self.color = color
        self.memory: dict[str, float] = stage_memory(None)
        self.place: tuple[int, int, int] | None = None  # (stage, replica, replicas) in the plan
        self.stale = False
        self._dragging = False
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)  # repaint the bar, not its parents
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setAccessibleName(f"budget of {name}")
        self._update_tooltip()

    # -- values --------------------------------------------------------------------

    @property
    def filled_bytes(self) -> float:
        return sum(self.memory.values())

    def set_budget(self, budget_bytes: int) -> None:
        if budget_bytes != self.budget_bytes:
            self.budget_bytes = budget_bytes
            self._update_tooltip()
            self.update()

    def set_place(self, place: tuple[int, int, int] | None) -> None:
        """Which stage (and replica of how many) this device runs; None when unused."""
        if place != self.place:
            self.place = place
            self._update_tooltip()

    def set_memory(self, memory: dict[str, float], stale: bool) -> None:
        if memory != self.memory or stale != self.stale:
            self.memory, self.stale = memory, stale
            self._update_tooltip()
            self.update()

    # -- geometry ------------------------------------------------------------------

    def track_rect(self) -> QRectF:
        return QRectF(8, 5, max(1, self.width() - 16), max(1, self.height() - 10))

    def x_for_bytes(self, num_bytes: float) -> float:
        track = self.track_rect()
        return track.left() + track.width() * min(1.0, max(0.0, num_bytes / self.total_bytes))

    def bytes_for_x(self, x: float) -> int:
        track = self.track_rect()
        fraction = min(1.0, max(0.0, (x - track.left()) / track.width()))
        return max(MIB, round(fraction * self.total_bytes / MIB) * MIB)

    def sizeHint(self) -> QSize:
        return QSize(420, 28)

    def minimumSizeHint(self) -> QSize:
        return QSize(160, 28)

    # -- input ---------------------------------------------------------------------

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return super().mousePressEvent(event)
        self._dragging = True
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        if abs(event.position().x() - self.x_for_bytes(self.budget_bytes)) > HANDLE_GRAB_PX:
            self._request(self.bytes_for_x(event.position().x()))  # a click on the track jumps there
        self.update()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        x = event.position().x()
        if self._dragging:
            self._request(self.bytes_for_x(x))
        near = abs(x - self.x_for_bytes(self.budget_bytes)) <= HANDLE_GRAB_PX
        self.setCursor(Qt.CursorShape.SizeHorCursor if near or self._dragging else Qt.CursorShape.PointingHandCursor)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._dragging and event.button() == Qt.MouseButton.LeftButton:
            self._dragging = False
            self._request(self.bytes_for_x(event.position().x()))
            self.update()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        small = max(MIB, round(self.total_bytes * SMALL_STEP / MIB) * MIB)
        big = max(MIB, round(self.total_bytes * BIG_STEP / MIB) * MIB)
        steps = {Qt.Key.Key_Left: -small, Qt.Key.Key_Down: -small, Qt.Key.Key_Right: small,
                 Qt.Key.Key_Up: small, Qt.Key.Key_PageDown: -big, Qt.Key.Key_PageUp: big}
        key = Qt.Key(event.key())
        if key in steps:
            self._request(self.budget_bytes + steps[key])
        elif key == Qt.Key.Key_Home:
            self._request(MIB)
        elif key == Qt.Key.Key_End:
            self._request(self.total_bytes)
        else:
            super().keyPressEvent(event)

    def focusInEvent(self, event: QFocusEvent) -> None:
        super().focusInEvent(event)
        self.update()

    def focusOutEvent(self, event: QFocusEvent) -> None:
        super().focusOutEvent(event)
        self.update()

    def _request(self, budget_bytes: int) -> None:
        budget = max(MIB, min(int(budget_bytes), self.total_bytes))
        if budget != self.budget_bytes:
            self.set_budget(budget)  # follow the hand at once; the state confirms
            self.budget_requested.emit(budget)

    # -- painting ------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor(theme.SURFACE))
        track = self.track_rect()
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(theme.TRACK))
        painter.drawRoundedRect(track, 4, 4)
        self._paint_memory(painter, track)
        budget_x = self.x_for_bytes(self.budget_bytes)
        above = QRectF(budget_x, track.top(), track.right() - budget_x, track.height())
        painter.setBrush(QBrush(QColor(theme.MUTED), Qt.BrushStyle.BDiagPattern))
        painter.drawRect(above)
        painter.setPen(QPen(QColor(theme.BORDER), 1))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRoundedRect(track, 4, 4)
        self._paint_handle(painter, track, budget_x)
        painter.end()

    def _paint_memory(self, painter: QPainter, track: QRectF) -> None:
        x = track.left()
        for kind in theme.MEMORY_KINDS:
            width = track.width() * self.memory[kind] / self.total_bytes
            width = min(width, track.right() - x)
            if width <= 0:
                continue
            color = theme.memory_color(kind)
            painter.setBrush(theme.stale(color) if self.stale else color)
            painter.drawRect(QRectF(x, track.top() + 1, width, track.height() - 2))
            x += width

    def _paint_handle(self, painter: QPainter, track: QRectF, x: float) -> None:
        line = QColor(theme.TEXT)
        painter.setPen(QPen(line, 2))
        painter.drawLine(QPointF(x, track.top() - 4), QPointF(x, track.bottom() + 4))
        grip = QRectF(x - 5, track.center().y() - 8, 10, 16)
        focused = self.hasFocus() or self._dragging
        painter.setPen(QPen(QColor(theme.ACCENT) if focused else line, 2 if focused else 1))
        painter.setBrush(QColor(theme.SURFACE))
        painter.drawRoundedRect(grip, 3, 3)
        painter.setPen(QPen(QColor(theme.MUTED), 1))
        for dx in (-2, 0, 2):  # the grip's ridges
            painter.drawLine(QPointF(x + dx, grip.top() + 5), QPointF(x + dx, grip.bottom() - 5))

    def _update_tooltip(self) -> None:
        lines = [f"<b>{self.name}</b>", f"Budget: {format_bytes(self.budget_bytes)} of "
                 f"{format_bytes(self.total_bytes)} ({self.budget_bytes:,} bytes)"]
        if self.filled_bytes:
            prefix = "Last feasible plan" if self.stale else "Plan"
            where = ""
            if self.place is not None:
                stage, replica, replicas = self.place
                where = f"stage {stage}" + (f", replica {replica} of {replicas}" if replicas > 1 else "") + ", "
            lines.append(f"{prefix}: {where}{format_bytes(self.filled_bytes)}")
            adapters = any(self.memory[kind] for kind in theme.ADAPTER_ONLY_KINDS)
            lines += [f"&nbsp;&nbsp;{memory_label(k, adapters)}: {format_bytes(v)}" for k, v in self.memory.items()
                      if v or k not in theme.ADAPTER_ONLY_KINDS]
        else:
            lines.append("The plan does not use this device")
        lines.append("<i>Drag the handle, or ←/→ and PgUp/PgDn when focused</i>")
        self.setToolTip("<br>".join(lines))


class BudgetBarsPanel(QWidget):
    """A bar per included device, with names, figures and the memory legend; binds to the state."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._bars: dict[str, BudgetBar] = {}
        self._figures: dict[str, QLabel] = {}
        self._rows = QGridLayout()
        self._rows.setHorizontalSpacing(12)
        self._rows.setVerticalSpacing(0)
        self._rows.setColumnStretch(1, 1)
        self._empty = QLabel("No device is included in planning: tick one in the device list.")
        self._empty.setObjectName("muted")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 6, 12, 6)
        layout.addLayout(self._header())
        layout.addLayout(self._rows)
        layout.addWidget(self._empty)
        layout.addStretch(1)
        state.devices_changed.connect(self._update_devices)
        state.budget_changed.connect(self._update_budget)
        state.plan_changed.connect(self._update_plan)
        state.stale_changed.connect(self._update_plan)
        self._update_devices()

    def bar(self, name: str) -> BudgetBar:
        return self._bars[name]

    @property
    def bars(self) -> dict[str, BudgetBar]:
        return dict(self._bars)

    def _header(self) -> QVBoxLayout:
        """The title, and under it the legend: with adapters it names seven kinds, more than a
        title row of a 1280 px window holds."""
        title = QLabel("Memory budgets")
        title.setFont(theme.heading_font())
        legend = QHBoxLayout()
        legend.setSpacing(4)
        self._legend: dict[str, tuple[QLabel, QLabel]] = {}
        for kind in theme.MEMORY_KINDS:
            swatch = QLabel()
            swatch.setFixedSize(12, 12)
            swatch.setStyleSheet(f"background: {theme.MEMORY_COLORS[kind]}; border-radius: 2px;")
            label = QLabel(theme.MEMORY_LABELS[kind])
            legend.addWidget(swatch)
            legend.addWidget(label)
            legend.addSpacing(8)
            self._legend[kind] = (swatch, label)
        self._show_legend(adapters=False)
        legend.addStretch(1)
        header = QVBoxLayout()
        header.setSpacing(2)
        header.addWidget(title)
        header.addLayout(legend)
        return header

    def _update_devices(self) -> None:
        while self._rows.count():
            item = self._rows.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.hide()  # out of the layout until deleted: it would be drawn where it was
                widget.deleteLater()
        self._bars, self._figures = {}, {}
        for row, entry in enumerate(self.state.included_devices):
            color = theme.device_color(self.state.color_slot(entry.name))
            bar = BudgetBar(entry.name, entry.memory_total_bytes, entry.budget_bytes, color)
            bar.budget_requested.connect(lambda value, name=entry.name: self.state.set_budget(name, value))
            figures = QLabel()
            figures.setFont(theme.mono_font())
            # a fixed width: new figures on every move must not re-lay out the panel
            figures.setFixedWidth(figures.fontMetrics().horizontalAdvance(FIGURES_TEMPLATE) + 8)
            self._rows.addWidget(self._name_label(entry.name, entry.model_name, color), row, 0)
            self._rows.addWidget(bar, row, 1)
            self._rows.addWidget(figures, row, 2)
            self._bars[entry.name], self._figures[entry.name] = bar, figures
        if self._bars:  # under the figures and bars: beside the legend they made the window wider than 1280 px
            hint = QLabel("drag a handle · ←/→ 1% · PgUp/PgDn 10%")
            hint.setObjectName("muted")
            self._rows.addWidget(hint, len(self._bars), 2)
            over = QLabel("▨ above budget")
            over.setObjectName("muted")
            self._rows.addWidget(over, len(self._bars), 1, Qt.AlignmentFlag.AlignRight)
        self._empty.setVisible(not self._bars)
        self._update_plan()

    def _name_label(self, name: str, model_name: str, color: QColor) -> QLabel:
        label = QLabel(f"<span style='color:{color.name()}; font-size:14pt'>●</span>&nbsp;<b>{name}</b>")
        label.setToolTip(model_name or name)
        label.setMinimumWidth(150)
        return label

    def _show_legend(self, adapters: bool) -> None:
        """The frozen weights and scratch only with adapters, whose weights are then the adapters."""
        for kind, (swatch, label) in self._legend.items():
            shown = adapters or kind not in theme.ADAPTER_ONLY_KINDS
            swatch.setVisible(shown)
            label.setVisible(shown)
            label.setText(theme.ADAPTER_LEGEND_LABELS[kind] if adapters else theme.LEGEND_LABELS[kind])
            label.setToolTip(memory_label(kind, adapters))

    def _update_budget(self, name: str, budget_bytes: int) -> None:
        if name in self._bars:
            self._bars[name].set_budget(budget_bytes)
            self._update_figures(name)

    def _update_plan(self) -> None:
        """Each device shows its stage's memory; every device of a group holds its stage's share."""
        plan = self.state.shown_plan
        problem = self.state.problem
        placed = stage_of_device(plan, [device.name for device in problem.devices] if problem is not None else ())
        chunks = chunks_of_device(plan) if plan is not None and plan.chunks > 1 else {}
        self._show_legend(plan is not None and any(stage.frozen_bytes or stage.scratch_bytes
                                                   for stage in plan.stages))
        for name, bar in self._bars.items():
            where = placed.get(name)
            bar.set_memory(stage_memory(where[2] if where else None, chunks.get(name, ())), self.state.plan_is_stale)
            bar.set_place(None if where is None else (where[0], where[1], len(where[2].devices)))
            self._update_figures(name)

    def _update_figures(self, name: str) -> None:
        bar = self._bars[name]
        used = f"{format_gib(bar.filled_bytes):>6} GiB" if bar.filled_bytes else (
            "unused    " if self.state.shown_plan is not None else "no plan   ")
        self._figures[name].setText(f"{used} │ budget {format_gib(bar.budget_bytes):>6} / {format_gib(bar.total_bytes)} GiB")
        stale = bar.stale and bar.filled_bytes > 0
        if stale != (self._figures[name].property("stale") is True):  # style sheets are costly: only on a change
            self._figures[name].setProperty("stale", stale)
            self._figures[name].setStyleSheet(f"color: {theme.STALE};" if stale else "")

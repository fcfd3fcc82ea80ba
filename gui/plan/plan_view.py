"""The plan: summary figures, solver choice, stage table, timeline, comparison, exports.

Binds to the state: `plan_changed` refills the figures, table and timeline;
the solver box goes back through `AppState.set_solver`. While no plan fits,
the last feasible one stays, greyed, under the banner that says why.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QResizeEvent, QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.errors import InputError
from core.planning.front_door import SOLVER_NAMES, Plan, StageCost, host_stage_note
from core.units import format_bytes, format_count, format_gap, format_seconds
from gui import theme
from gui.plan.comparison import DESCRIPTIONS, ComparisonTable
from gui.plan.exports import TorchrunDialog, ask_and_write, device_map_refusal
from gui.plan.groups import group_label, shape_text, sync_s
from gui.plan.timeline import PlanTimeline
from gui.state import AppState
from gui.widgets.tables import fill_table, style_readonly_table

STAGE_COLUMNS = ("Stage", "Device", "Layers", "Params", "Param+grad+opt", "Activations",
                 "Memory / budget", "Compute", "Comm", "Time/µbatch", "Sync")
GROUP_HEADER = "Group"  # the device column's header when stages run on groups (in replica order)
SYNC_COLUMN = STAGE_COLUMNS.index("Sync")  # once a step; shown only for plans with replicas
MEMORY_COLUMN = STAGE_COLUMNS.index("Memory / budget")
ADAPTER_HEADERS = ("Adapters", "Adapt.+grad+opt")  # columns 3 and 4 of LoRA and QLoRA plans
METRICS = ("step", "tokens", "bound", "gap", "status")
# Narrower than this (the Plan tab of a 1280 px window), the timeline sits above the comparison:
# beside it, the comparison's six columns and wrapped notes did not fit and the table scrolled sideways.
SIDE_BY_SIDE_MIN_PX = 960
STALE_NOTES = {  # keyed by AppState.plan_is_outdated
    True: "Planning the new inputs… the figures below are the previous plan's, greyed until the new one arrives.",
    False: "No plan fits the current inputs: showing the last feasible plan, greyed.",
}
METRIC_NAMES = {"step": "Step time T", "tokens": "Tokens / s", "bound": "Lower bound",
                "gap": "Gap to bound", "status": "Solver"}


def stale_note(outdated: bool, other_model: str | None) -> str:
    """The line above greyed figures; it names the model they are of when that is not the chosen one."""
    if outdated or other_model is None:
        return STALE_NOTES[outdated]
    return f"No plan fits the current inputs: showing the last plan that fitted, {other_model}'s, greyed."


def compact_name(layer: str) -> str:
    """'model.layers.14' -> 'layers.14', 'transformer.h.3' -> 'h.3': the wrapper prefix says nothing."""
    for prefix in ("model.", "transformer.", "gpt_neox.", "decoder."):
        if layer.startswith(prefix):
            return layer[len(prefix):]
    return layer


def layer_span(first: str, last: str) -> str:
    """'layers.10', 'layers.14' -> 'layers.10–14'; otherwise 'first – last'."""
    first, last = compact_name(first), compact_name(last)
    if first == last:
        return first
    head, _, a = first.rpartition(".")
    tail, _, b = last.rpartition(".")
    if head and head == tail and a.isdigit() and b.isdigit():
        return f"{head}.{a}–{b}"
    return f"{first} – {last}"


def stage_row(index: int, stage: StageCost, bottleneck: bool) -> list[str]:
    """One stage as the table's text (memory per device of its group)."""
    span = layer_span(stage.layers[0], stage.layers[-1])
    states = stage.weight_bytes + stage.grad_bytes + stage.optimizer_bytes
    share = stage.memory_bytes / stage.budget_bytes if stage.budget_bytes else 0.0
    return [("▶ " if bottleneck else "") + str(index), group_label(stage), f"{span} ({len(stage.layers)})",
            format_count(stage.params), _bytes(states), _bytes(stage.activation_bytes),
            f"{_used_of(stage.memory_bytes, stage.budget_bytes)} ({share:.0%})",
            format_seconds(stage.compute_s), format_seconds(stage.comm_s),
            format_seconds(stage.time_s), format_seconds(stage.sync_s)]


def memory_parts_text(stage: StageCost) -> str:
    """A LoRA or QLoRA stage's memory by part (docs/design.md, "Fine-tuning"), for the memory cell's tooltip."""
    parts = [("frozen weights", stage.frozen_bytes),
             ("adapters + grads + optimizer", stage.weight_bytes + stage.grad_bytes + stage.optimizer_bytes),
             ("activations", stage.activation_bytes), ("quantisation scratch", stage.scratch_bytes)]
    return "\n".join(f"{name}: {format_bytes(value)}" for name, value in parts if value or name != "quantisation scratch")


def _bytes(num_bytes: float) -> str:
    """format_bytes with one decimal: the table has ten columns to fit. Rounded once: rounding
    the two-decimal text again read an H100's 79.65 GiB as 79.7 beside its bar's 79.6."""
    return format_bytes(num_bytes, digits=1)


def _used_of(used_bytes: float, budget_bytes: float) -> str:
    """'73.4 / 79.7 GiB': the unit once where both share it (at 1600 px the column's
    second 'GiB' made the table wider than its view)."""
    used, budget = _bytes(used_bytes), _bytes(budget_bytes)
    number, _, unit = used.partition(" ")
    return f"{number if unit == budget.partition(' ')[2] else used} / {budget}"


def metric_texts(plan: Plan | None) -> dict[str, str]:
    """The summary figures of a plan ('—' where unknown)."""
    if plan is None:
        return dict.fromkeys(METRICS, "—")
    gap = plan.gap_to_lower_bound
    status = plan.status + (f" (gap {plan.gap:.1%})" if plan.gap else "")
    return {"step": format_seconds(plan.objective_s) if plan.objective_s is not None else "—",
            "tokens": _tokens_text(plan.tokens_per_s) if plan.tokens_per_s else "—",
            "bound": format_seconds(plan.lower_bound_s),
            "gap": format_gap(gap) if gap is not None else "—",
            "status": status}


def _tokens_text(tokens_per_s: float) -> str:
    """20,097 in full; from a million on, 58.4M: the card is narrow and its font large."""
    return format_count(tokens_per_s) if tokens_per_s >= 1e6 else f"{tokens_per_s:,.0f}"


class MetricCard(QFrame):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.setObjectName("metricCard")
        self.value = QLabel("—")
        self.value.setObjectName("metricValue")
        # new figures must not re-lay out the row of cards on every plan
        self.value.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.value.setMinimumWidth(110)
        self.name = QLabel(name)
        self.name.setObjectName("metricName")
        self.name.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 6, 12, 6)
        layout.setSpacing(0)
        layout.addWidget(self.name)
        layout.addWidget(self.value)
        self.stale = False

    def set_stale(self, stale: bool) -> None:
        if stale != self.stale:  # style sheets are costly: apply only on a change
            self.stale = stale
            self.value.setStyleSheet(f"color: {theme.STALE}" if stale else "")


class PlanView(QWidget):
    """Everything about the current plan; binds to the state."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._shown_once = False
        self.solver_box = QComboBox()
        self.solver_box.setMinimumWidth(130)
        for name in SOLVER_NAMES:
            self.solver_box.addItem(name, name)
            self.solver_box.setItemData(self.solver_box.count() - 1, DESCRIPTIONS.get(name, ""), Qt.ItemDataRole.ToolTipRole)
        self.cards = {key: MetricCard(METRIC_NAMES[key]) for key in METRICS}
        self.stage_table = self._make_stage_table()
        self.timeline = PlanTimeline(state)
        self.timeline_stack = QStackedWidget()
        self.timeline_stack.addWidget(self.timeline)
        self.timeline_stack.addWidget(_muted("No feasible plan to draw yet."))
        self.comparison = ComparisonTable(state)
        self.export_buttons = {
            "plan": QPushButton("Plan JSON…"),
            "device_map": QPushButton("accelerate device_map…"),
            "torchrun": QPushButton("torchrun commands…"),
        }
        self.stale_note = QLabel()
        self.stale_note.setObjectName("muted")
        self.host_note = QLabel()  # layers on the host CPU next to GPUs: why the figures are so slow
        self.host_note.setWordWrap(True)
        self.host_note.setStyleSheet(f"color: {theme.BOTTLENECK}")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.addLayout(self._top_row())
        layout.addWidget(self.stale_note)
        layout.addWidget(self.host_note)
        layout.addWidget(self._body(), 1)
        self.solver_box.currentIndexChanged.connect(self._solver_picked)
        self.export_buttons["plan"].clicked.connect(lambda: ask_and_write(self, state, "plan"))
        self.export_buttons["device_map"].clicked.connect(lambda: ask_and_write(self, state, "device_map"))
        self.export_buttons["torchrun"].clicked.connect(self._show_torchrun)
        state.plan_changed.connect(self._update_plan)
        state.stale_changed.connect(self._update_plan)
        state.solver_changed.connect(self._update_solver)
        self._update_solver()
        self._update_plan()

    # -- layout --------------------------------------------------------------------

    def _top_row(self) -> QVBoxLayout:
        """The solver and the exports on a line, the figures under them: side by side, the
        three made the window 1,566 px wide at least, wider than a 1280 px screen."""
        line = QHBoxLayout()
        label = QLabel("Solver")
        label.setObjectName("metricName")
        line.addWidget(label)
        line.addWidget(self.solver_box)
        line.addStretch(1)
        for button in self.export_buttons.values():
            line.addWidget(button)
        cards = QHBoxLayout()
        for card in self.cards.values():
            cards.addWidget(card, 1)
        top = QVBoxLayout()
        top.setSpacing(6)
        top.addLayout(line)
        top.addLayout(cards)
        return top

    def _body(self) -> QSplitter:
        """The stage table above; the timeline and the comparison side by side below."""
        self.timeline_caption = QLabel()
        self.timeline_caption.setStyleSheet(f"color: {theme.BOTTLENECK}")
        # long group names must not widen the window: the caption wraps under itself, never cut
        self.timeline_caption.setWordWrap(True)
        below = QSplitter(Qt.Orientation.Horizontal)
        below.addWidget(_titled("Pipeline timeline (one step)", self.timeline_stack, self.timeline_caption))
        below.addWidget(_titled("All solvers on this problem", self.comparison, self.comparison.note_label))
        self._below = below
        splitter = QSplitter(Qt.Orientation.Vertical)
        self.shape_note = QLabel()
        self.shape_note.setObjectName("muted")
        splitter.addWidget(_titled("Stages", self.stage_table, self.shape_note))
        splitter.addWidget(below)
        splitter.setSizes([240, 300])
        for part in (splitter, below):
            part.setChildrenCollapsible(False)
        return splitter

    def _make_stage_table(self) -> QTableWidget:
        table = style_readonly_table(QTableWidget(0, len(STAGE_COLUMNS)), STAGE_COLUMNS)
        table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        return table

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._shown_once:  # size hints are only real once shown: give the comparison room
            self._shown_once = True
            self._arrange_below()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self._shown_once and self._side_by_side() != (self._below.orientation() == Qt.Orientation.Horizontal):
            self._arrange_below()

    def _side_by_side(self) -> bool:
        return self.width() >= SIDE_BY_SIDE_MIN_PX

    def _arrange_below(self) -> None:
        """The timeline beside the comparison where the view is wide; narrower (a 1280 px
        window), above it: side by side, the comparison scrolled sideways, its notes off view."""
        if self._side_by_side():
            self._below.setOrientation(Qt.Orientation.Horizontal)
            width = max(self._below.width(), 800)
            self._below.setSizes([int(width * 0.44), int(width * 0.56)])
        else:
            self._below.setOrientation(Qt.Orientation.Vertical)
            height = max(self._below.height(), 300)
            self._below.setSizes([int(height * 0.4), int(height * 0.6)])
            outer = self._below.parentWidget()
            if isinstance(outer, QSplitter):  # the stage table gives the two of them room
                total = sum(outer.sizes())
                outer.setSizes([int(total * 0.3), total - int(total * 0.3)])

    # -- state -> widgets ------------------------------------------------------------

    def _update_solver(self, *_: object) -> None:
        self.solver_box.blockSignals(True)
        self.solver_box.setCurrentIndex(self.solver_box.findData(self.state.solver))
        self.solver_box.blockSignals(False)

    def _update_plan(self) -> None:
        plan, stale = self.state.shown_plan, self.state.plan_is_stale
        for key, text in metric_texts(plan).items():
            self.cards[key].value.setText(text)
            self.cards[key].set_stale(stale)
        self.cards["status"].name.setText(
            f"{plan.solver} · {format_seconds(plan.solve_time_s)}" if plan else METRIC_NAMES["status"])
        self.timeline_caption.setText(_bottleneck_text(plan))
        self.timeline_caption.setToolTip(self.timeline_caption.text())
        self.timeline_stack.setCurrentIndex(0 if plan is not None else 1)
        self.stale_note.setVisible(stale and plan is not None)
        self.stale_note.setText(stale_note(self.state.plan_is_outdated, self.state.shown_model_name))
        note = host_stage_note(plan, self.state.shown_problem)
        self.host_note.setText(note or "")
        self.host_note.setVisible(note is not None)
        self.shape_note.setText(shape_text(plan) if plan is not None else "")
        self._fill_stage_table(plan, stale)
        for key in ("plan", "device_map", "torchrun"):
            self.export_buttons[key].setEnabled(not stale)
        refusal = device_map_refusal(plan) if plan is not None else None
        if refusal:
            self.export_buttons["device_map"].setEnabled(False)
        self.export_buttons["device_map"].setToolTip(
            refusal or "accelerate's device_map for from_pretrained: which device holds each module")

    def _fill_stage_table(self, plan: Plan | None, stale: bool) -> None:
        stages = plan.stages if plan is not None else ()
        bottleneck = plan.bottleneck_index if plan is not None else None
        grouped = plan is not None and plan.data_parallel > 1
        header = self.stage_table.horizontalHeaderItem(1)
        assert header is not None  # set by style_readonly_table
        header.setText(GROUP_HEADER if grouped else STAGE_COLUMNS[1])
        header.setToolTip("Each stage's devices in replica order: replica r runs on the r-th device of "
                          "every group" if grouped else "")
        self.stage_table.setColumnHidden(SYNC_COLUMN, not grouped)
        adapters = any(stage.frozen_bytes or stage.scratch_bytes for stage in stages)
        for column, text in ((3, ADAPTER_HEADERS[0] if adapters else STAGE_COLUMNS[3]),
                             (4, ADAPTER_HEADERS[1] if adapters else STAGE_COLUMNS[4])):
            item = self.stage_table.horizontalHeaderItem(column)
            if item is not None:
                item.setText(text)
        rows: list[list[QTableWidgetItem]] = []
        for s, stage in enumerate(stages):
            color = theme.device_text_color(self.state.color_slot(stage.device))
            rows.append([])
            for c, text in enumerate(stage_row(s, stage, s == bottleneck)):
                item = QTableWidgetItem(text)
                if c not in (1, 2):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if stale:
                    item.setForeground(QColor(theme.STALE))
                elif c == 1:
                    item.setForeground(color)
                if s == bottleneck and not stale:
                    item.setBackground(QColor(theme.DANGER_BG))
                if c in (1, 9) and s == bottleneck:
                    font = QFont(item.font())
                    font.setBold(True)
                    item.setFont(font)
                if c == 2:
                    item.setToolTip("\n".join(stage.layers))
                elif c == 1 and grouped:
                    item.setToolTip("\n".join(f"replica {r}: {device}" for r, device in enumerate(stage.devices)))
                elif c == MEMORY_COLUMN and (stage.frozen_bytes or stage.scratch_bytes):
                    item.setToolTip(memory_parts_text(stage))
                elif c == SYNC_COLUMN:
                    item.setToolTip("This group's gradient exchange (ZeRO 3: also the gathered parameters), "
                                    "once at the end of the step")
                elif s == bottleneck:
                    item.setToolTip("The bottleneck: the slowest stage sets the pipeline's pace")
                rows[-1].append(item)
        fill_table(self.stage_table, rows, stretch_column=2)

    # -- widgets -> state ------------------------------------------------------------

    def _solver_picked(self) -> None:
        self.state.set_solver(self.solver_box.currentData())

    def _show_torchrun(self) -> None:
        try:
            dialog = TorchrunDialog(self.state, self)
        except InputError:
            return
        dialog.exec()


def _muted(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("muted")
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    return label


def _titled(title: str, widget: QWidget, aside: QLabel | None = None) -> QWidget:
    """A bold heading (with an optional note at its right) above a widget."""
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 6, 0, 0)
    layout.setSpacing(4)
    heading = QHBoxLayout()
    label = QLabel(title)
    label.setFont(theme.heading_font(theme.BASE_POINT_SIZE))
    top = Qt.AlignmentFlag.AlignTop  # a note on two lines leaves the title on the first
    heading.addWidget(label, 0, top)
    if aside is not None and aside.wordWrap():
        heading.addWidget(aside, 1, top)  # it takes the room left, on more lines where that is narrow
    else:
        heading.addStretch(1)
        if aside is not None:
            heading.addWidget(aside)
    layout.addLayout(heading)
    layout.addWidget(widget, 1)
    return box


def _bottleneck_text(plan: Plan | None) -> str:
    if plan is None or plan.bottleneck_index is None:
        return ""
    stage = plan.stages[plan.bottleneck_index]
    time, sync = (format_seconds(t).replace(" ", "\N{NO-BREAK SPACE}") for t in (stage.time_s, sync_s(plan)))
    if plan.data_parallel > 1:  # the lanes name the groups: room for the sync instead
        return f"bottleneck: stage {plan.bottleneck_index}, {time}/micro-batch · sync {sync}"
    # where it wraps, a figure keeps its unit: "287 ms" on one line
    return f"bottleneck: stage {plan.bottleneck_index} on {stage.device}, {time} per micro-batch"

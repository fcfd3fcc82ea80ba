"""Every solver on the same problem, side by side: what the optimal plan buys.

Step time and the ratio to the exact solver's, and each plan's shape
(stages, or replicas × stages with its ZeRO stage); "OOM" where a baseline's
placement overflows a budget (its step time is still shown: what it would
take if it fitted); why a solver could not run otherwise. Double-click a row
to plan with that solver.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from core.planning.front_door import (
    SOLVER_NAMES,
    FasterBaseline,
    Plan,
    faster_outside_the_setup,
    solver_label,
)
from core.units import format_seconds
from gui import theme
from gui.plan.groups import shape_text
from gui.state import AppState
from gui.widgets.banner import readable_reason
from gui.widgets.tables import fill_table, style_readonly_table

DOUBLE_CLICK_NOTE = "double-click a row to plan with it"
COLUMNS = ("Solver", "Status", "Step time", "vs exact", "Tokens/s", "Note")
DESCRIPTIONS = {
    "exact": "proven optimal split and device order (dynamic programming)",
    "milp": "mixed-integer program (HiGHS)",
    "greedy": "accelerate's rule: fill the devices in order",
    "accelerate": "accelerate's own placement of the real model",  # no 230 px word: notes wrap to 160 px
    "uniform": "DeepSpeed 'uniform': equal layer counts",
    "parameters": "DeepSpeed 'parameters': balanced parameter counts",
    "fsdp": "PyTorch FSDP / DeepSpeed ZeRO-3: every device a replica of the whole model",
    "ddp": "PyTorch DDP: every device a full replica (ZeRO 0)",
    "zero1": "DeepSpeed ZeRO-1: every device a replica, optimizer state sharded",
    "megatron": "Megatron-LM: equal stages × data parallel, the best replica count",
    "pipeline": "today's exact pipeline (one device per stage, no ZeRO)",
    "device-map": "PEFT with the same adapters on device_map=\"auto\": accelerate's placement, "
                  "the GPUs one after another",
}


def row_label(name: str) -> str:
    """A solver's name in the table: device-map as "device_map", its note naming the call and the
    adapters (a longer name widens the Solver column past what the notes leave it at 1280 px)."""
    return "device_map" if name == "device-map" else solver_label(name, "full")


def comparison_rows(results: dict[str, Plan | str], reference: Plan | None) -> list[list[str]]:
    """The table's text, one row per solver (also used by tests and screenshots)."""
    rows = []
    for name, plan in results.items():
        label = row_label(name)
        if isinstance(plan, str):
            rows.append([label, "n/a", "", "", "", plan])
            continue
        time = format_seconds(plan.objective_s) if plan.objective_s is not None else ""
        if not plan.feasible:
            status = "OOM" if plan.stages else "infeasible"
            rows.append([label, status, time, "", "", readable_reason(plan.reason or "", exact=False)])
            continue
        ratio = ""
        if reference is not None and reference.objective_s and plan.objective_s:
            ratio = format_ratio(plan.objective_s / reference.objective_s)
        tokens = f"{plan.tokens_per_s:,.0f}" if plan.tokens_per_s else ""
        rows.append([label, plan.status, time, ratio, tokens, f"{shape_text(plan)}: {_description(name, plan)}"])
    return rows


def _description(name: str, plan: Plan) -> str:
    """What a row's solver does; the exact row's plan may be the chunked schedules' search (auto)."""
    if name == "exact" and plan.solver == "chunked-search":
        return f"{plan.schedule} in {plan.chunks} chunks a device, searched (not proven optimal)"
    if name == "exact" and plan.chunks > 1:
        return f"{plan.schedule} in {plan.chunks} chunks a device, every placement tried (optimal)"
    return DESCRIPTIONS.get(name, "")


class ComparisonTable(QTableWidget):
    """The comparison as a table; binds to the state's comparison and solver."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(0, len(COLUMNS), parent)
        # Not self.state: that would hide QAbstractItemView.state(), which Qt's views call.
        self.app_state = state
        self._shown: dict[str, Plan | str] | None = None
        style_readonly_table(self, COLUMNS)
        # a note (why a baseline does not fit, what a solver is) wraps in its row rather than lose its end
        self.setWordWrap(True)
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.setAlternatingRowColors(True)
        self.setToolTip("Double-click a row to plan with that solver")
        self.cellDoubleClicked.connect(self._row_chosen)
        # Beside the heading: how to use the table, or a baseline that beats the exact plan outside the setup.
        self.note_label = QLabel(DOUBLE_CLICK_NOTE)
        self.note_label.setObjectName("muted")
        self.note_label.setWordWrap(True)
        self.note_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
        state.comparison_changed.connect(self._update_comparison)
        state.solver_changed.connect(self._update_comparison)
        state.error_changed.connect(self._update_comparison)
        state.stale_changed.connect(self._update_comparison)
        self._update_comparison()

    @property
    def is_current(self) -> bool:
        """False while the shown rows belong to an earlier plan (they are greyed meanwhile)."""
        return self.isEnabled()

    def _update_comparison(self, *_: object) -> None:
        results = self.app_state.comparison
        if (results is None or self.app_state.plan_is_outdated) and self.rowCount() and self._shown is not None:
            self.setEnabled(False)  # keep the last comparison, greyed, until the new one: no refill
            return
        if results is None:
            # An error answers instead of a plan, and no comparison follows it.
            note = "not run: nothing can be planned (see the banner)" if self.app_state.error else "computing…"
            results = dict.fromkeys(SOLVER_NAMES, note)
        self._shown = self.app_state.comparison
        self.setEnabled(True)
        exact = results.get("exact")
        rows = comparison_rows(results, exact if isinstance(exact, Plan) else None)
        chosen = row_label(self.app_state.solver)
        items = [[self._item(text, c, row[0] == chosen, row[1]) for c, text in enumerate(row)]
                 for row in rows]
        fill_table(self, items, stretch_column=len(COLUMNS) - 1)
        self._show_faster(results, exact if isinstance(exact, Plan) else None)

    def _show_faster(self, results: dict[str, Plan | str], exact: Plan | None) -> None:
        faster = None if exact is None else faster_outside_the_setup(results, exact, self.app_state.setup)
        if faster is None:
            self.note_label.setText(DOUBLE_CLICK_NOTE)
            self.note_label.setObjectName("muted")
            self.note_label.setToolTip("")
        else:
            self.note_label.setText(faster_note(faster))
            self.note_label.setObjectName("warning")
            self.note_label.setToolTip("The exact plan is optimal for the data-parallel and ZeRO choices in the "
                                       "Model box; this baseline uses another choice.")
        self.note_label.style().unpolish(self.note_label)
        self.note_label.style().polish(self.note_label)

    def _item(self, text: str, column: int, chosen: bool, status: str) -> QTableWidgetItem:
        item = QTableWidgetItem(text)
        if column in (2, 3, 4):
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if column == 5:
            item.setToolTip(text)
        if chosen:
            font = QFont(item.font())
            font.setBold(True)
            item.setFont(font)
        if column == 1 and status in ("OOM", "infeasible"):
            item.setForeground(QColor(theme.DANGER))
        elif column == 1 and status == "optimal":
            item.setForeground(QColor("#2E7D32"))
        elif status == "n/a" or text == "computing…":
            item.setForeground(QColor(theme.MUTED))
        return item

    def _row_chosen(self, row: int, _column: int) -> None:
        item = self.item(row, 0)
        label = item.text() if item is not None else ""
        names = {row_label(name): name for name in SOLVER_NAMES}
        if label in names:
            self.app_state.set_solver(names[label])


def faster_note(faster: FasterBaseline) -> str:
    """'zero1 is 2.4% faster: set ZeRO stage to 1 to plan there'."""
    changes = ([f"ZeRO stage to {faster.zero}"] if faster.zero is not None else []) + \
        (["Data parallel to auto"] if faster.needs_auto_data_parallel else [])
    return f"{faster.solver} is {faster.faster_percent:.1f}% faster: set {' and '.join(changes)} to plan there"


def format_ratio(value: float) -> str:
    """1.00×, 12.3×, 9,005×: three significant figures are plenty."""
    return f"{value:.2f}×" if value < 10 else (f"{value:.1f}×" if value < 100 else f"{value:,.0f}×")

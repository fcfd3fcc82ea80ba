"""Colours, fonts and the style sheet: one place, so every view agrees.

Each device keeps one colour in every view (bars, graph nodes, stage table,
timeline); memory kinds (params, grads, optimizer state, activations) have
their own four colours, distinct from each other, with a legend where shown.
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication

# Tableau 10: distinct, readable on white, colour-blind friendly enough for 8 devices.
DEVICE_COLORS = ("#4E79A7", "#F28E2B", "#59A14F", "#E15759", "#76B7B2", "#EDC948",
                 "#B07AA1", "#FF9DA7", "#9C755F", "#BAB0AC")
# frozen weights and quantisation scratch are held only when fine-tuning with adapters (LoRA, QLoRA)
MEMORY_KINDS = ("frozen", "params", "grads", "optimizer", "activations", "working", "scratch")
ADAPTER_ONLY_KINDS = ("frozen", "scratch")
MEMORY_LABELS = {"frozen": "Frozen weights", "params": "Parameters", "grads": "Gradients",
                 "optimizer": "Optimizer state", "activations": "Activations", "working": "Working memory",
                 "scratch": "Quant. scratch"}
ADAPTER_PARAMS_LABEL = "Adapters"  # what "params" are when the base is frozen
# the legend's names: short, so that the bars' header fits a 1280 px window (the tooltips say them in full)
LEGEND_LABELS = {"frozen": "Frozen", "params": "Parameters", "grads": "Grads", "optimizer": "Optimizer",
                 "activations": "Activations", "working": "Working", "scratch": "Scratch"}
# the legend's names with adapters: six kinds in the room of four (the window stays within 1280 px)
ADAPTER_LEGEND_LABELS = {"frozen": "Frozen", "params": "Adapters", "grads": "Grads", "optimizer": "Optimizer",
                         "activations": "Activations", "working": "Working", "scratch": "Scratch"}
MEMORY_COLORS = {"frozen": "#8A96A8", "params": "#3D5A99", "grads": "#6FA8DC", "optimizer": "#E8A33D",
                 "activations": "#8E6CC0", "working": "#B7A6D6", "scratch": "#C2603A"}

TEXT = "#1F2430"
MUTED = "#5F6B7A"
BORDER = "#D5DAE1"
SURFACE = "#FFFFFF"
WINDOW = "#F3F5F8"
TRACK = "#E7EAEF"
ACCENT = "#2F6FDE"
DANGER = "#C0392B"
DANGER_BG = "#FDECEA"
WARNING = "#9A6700"
DISABLED_TEXT = "#A0A7B2"  # a choice that cannot apply (disabled buttons, combo items)
WARNING_BG = "#FFF4D6"
INFO_BG = "#E8F0FE"
STALE = "#B8BEC7"  # the last feasible plan, shown greyed while no plan fits
BOTTLENECK = "#D62728"

BASE_POINT_SIZE = 10
MONO_FAMILY = "DejaVu Sans Mono"


def device_color(slot: int) -> QColor:
    """The colour of the device in colour slot `slot` (see AppState.color_slot)."""
    return QColor(DEVICE_COLORS[slot % len(DEVICE_COLORS)])


def device_text_color(slot: int) -> QColor:
    """The device's colour dark enough to read as text on white (yellow and pink are not)."""
    color = device_color(slot)
    return color.darker(150) if color.lightnessF() > 0.6 else color


def memory_color(kind: str) -> QColor:
    return QColor(MEMORY_COLORS[kind])


PIPELINE_WAIT = "#4A5468"  # slate, not one of the device colours: a step's sync, a rank's waits
_ACTION_LIGHTER = {"F": 100, "B": 125, "I": 125, "W": 160}  # forward, backward, input and weight backward


def action_color(device: QColor, chunk: int, kind: str) -> QColor:
    """A pipeline action's block: its device's colour, darker the later its chunk, forwards in full
    colour, backwards lighter, weight backwards lightest (the plan's and the run's timelines)."""
    return device.darker(100 + 45 * chunk).lighter(_ACTION_LIGHTER.get(kind, 100))


def stale(color: QColor) -> QColor:
    """A colour washed out towards grey: what a no-longer-current plan looks like."""
    grey = QColor(STALE)
    return QColor((color.red() + 3 * grey.red()) // 4, (color.green() + 3 * grey.green()) // 4,
                  (color.blue() + 3 * grey.blue()) // 4)


def mono_font(point_size: int = BASE_POINT_SIZE - 1) -> QFont:
    font = QFont(MONO_FAMILY)
    font.setPointSize(point_size)
    return font


def heading_font(point_size: int = BASE_POINT_SIZE + 1) -> QFont:
    font = QFont()
    font.setPointSize(point_size)
    font.setBold(True)
    return font


STYLE_SHEET = f"""
QMainWindow, QDialog {{ background: {WINDOW}; }}
QWidget {{ color: {TEXT}; }}
QGroupBox {{
    background: {SURFACE}; border: 1px solid {BORDER}; border-radius: 6px;
    margin-top: 14px; padding: 10px 8px 8px 8px; font-weight: bold;
}}
QGroupBox::title {{ subcontrol-origin: margin; left: 10px; padding: 0 4px; color: {MUTED}; }}
QTabWidget::pane {{ border: 1px solid {BORDER}; border-radius: 6px; background: {SURFACE}; top: -1px; }}
QTabBar::tab {{
    background: {WINDOW}; border: 1px solid {BORDER}; border-bottom: none; padding: 6px 16px;
    border-top-left-radius: 6px; border-top-right-radius: 6px; margin-right: 2px; color: {MUTED};
}}
QTabBar::tab:selected {{ background: {SURFACE}; color: {TEXT}; font-weight: bold; }}
QTableWidget {{ background: {SURFACE}; gridline-color: #EEF0F3; border: 1px solid {BORDER}; border-radius: 4px; }}
QHeaderView::section {{
    background: {WINDOW}; border: none; border-bottom: 1px solid {BORDER}; padding: 4px 6px;
    font-weight: bold; color: {MUTED};
}}
QPushButton {{
    background: {SURFACE}; border: 1px solid {BORDER}; border-radius: 4px; padding: 4px 12px;
}}
QPushButton:hover {{ border-color: {ACCENT}; }}
QPushButton:disabled {{ color: {DISABLED_TEXT}; }}
QStatusBar {{ background: {SURFACE}; border-top: 1px solid {BORDER}; color: {MUTED}; }}
QSplitter::handle {{ background: {WINDOW}; }}
QLabel#muted {{ color: {MUTED}; }}
QLabel#warning {{ color: {WARNING}; font-weight: bold; }}
QLabel#metricValue {{ font-size: {BASE_POINT_SIZE + 5}pt; font-weight: bold; }}
QLabel#metricName {{ color: {MUTED}; }}
QFrame#metricCard {{ background: {SURFACE}; border: 1px solid {BORDER}; border-radius: 6px; }}
"""


def apply_theme(app: QApplication) -> None:
    """Fusion style, a light palette, our fonts and the style sheet; pyqtgraph on white."""
    import pyqtgraph as pg

    app.setStyle("Fusion")
    palette = app.palette()
    palette.setColor(QPalette.ColorRole.Window, QColor(WINDOW))
    palette.setColor(QPalette.ColorRole.Base, QColor(SURFACE))
    palette.setColor(QPalette.ColorRole.AlternateBase, QColor("#F7F8FA"))
    palette.setColor(QPalette.ColorRole.Text, QColor(TEXT))
    palette.setColor(QPalette.ColorRole.WindowText, QColor(TEXT))
    palette.setColor(QPalette.ColorRole.Highlight, QColor(ACCENT))
    palette.setColor(QPalette.ColorRole.ToolTipBase, QColor(SURFACE))
    palette.setColor(QPalette.ColorRole.ToolTipText, QColor(TEXT))
    app.setPalette(palette)
    font = app.font()
    font.setPointSize(BASE_POINT_SIZE)
    app.setFont(font)
    app.setStyleSheet(STYLE_SHEET)
    pg.setConfigOptions(background=SURFACE, foreground=MUTED, antialias=True)

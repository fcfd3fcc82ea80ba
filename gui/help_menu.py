"""The Help menu: keyboard shortcuts, where the README is, and the version."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from PySide6.QtWidgets import QMainWindow, QMessageBox

README = Path(__file__).resolve().parents[1] / "README.md"

SHORTCUTS = (
    ("Ctrl+N / Ctrl+O", "new project / open a project"),
    ("Ctrl+S / Ctrl+Shift+S", "save / save as"),
    ("Ctrl+Q", "quit (asks about unsaved changes and a live run)"),
    ("Ctrl+Tab / Ctrl+Shift+Tab", "next / previous tab (Plan, Layer graph, Monitor, Training)"),
    ("← / → on a budget bar", "budget down / up by 1% of the device's memory"),
    ("Page Down / Page Up on a budget bar", "budget down / up by 10%"),
    ("F2 or double-click a GPU's TFLOP/s", "type the speed of a GPU the catalog does not know"),
    ("Double-click a solver row", "plan with that solver"),
    ("Ctrl+C in the terminal", "close the window the normal way"),
)


def version() -> str:
    """Allot's installed version (pyproject.toml's), or 'unknown' when it is run from a bare checkout."""
    try:
        return metadata.version("allot")
    except metadata.PackageNotFoundError:
        return "unknown"


def shortcuts_text() -> str:
    rows = "".join(f"<tr><td><b>{keys}</b>&nbsp;&nbsp;</td><td>{what}</td></tr>" for keys, what in SHORTCUTS)
    return f"<table>{rows}</table>"


def about_text() -> str:
    return (f"<b>Allot</b> {version()}<br>Optimal layer-to-GPU placement, with live GPU and loss graphs."
            f"<br><br>README: {README}<br>(a tour of the commands; docs/ beside it: the cost model, the planner's options, training)")


def add_help_menu(window: QMainWindow) -> None:
    """Help > Keyboard shortcuts, README, About."""
    menu = window.menuBar().addMenu("&Help")
    menu.addAction("&Keyboard shortcuts", lambda: QMessageBox.information(window, "Keyboard shortcuts",
                                                                          shortcuts_text()))
    menu.addAction("&README location", lambda: QMessageBox.information(window, "README", f"{README}"))
    menu.addAction("&About Allot", lambda: QMessageBox.about(window, "About Allot", about_text()))

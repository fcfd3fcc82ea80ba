"""PySide6 + pyqtgraph views of the core; no business logic."""

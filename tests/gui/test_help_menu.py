"""Help menu: the keyboard shortcuts, where the README is, and the version."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox

from gui.help_menu import README, SHORTCUTS, about_text, version


def test_help_menu_lists_shortcuts_readme_and_version(qtbot, make_window, monkeypatch) -> None:
    window = make_window(wait=False)
    menus = {action.text().replace("&", ""): action.menu() for action in window.menuBar().actions()}
    assert "Help" in menus
    entries = [action.text().replace("&", "") for action in menus["Help"].actions()]
    assert entries == ["Keyboard shortcuts", "README location", "About Allot"]
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(QMessageBox, "information", lambda parent, title, text: shown.append((title, text)))
    monkeypatch.setattr(QMessageBox, "about", lambda parent, title, text: shown.append((title, text)))
    for action in menus["Help"].actions():
        action.trigger()
    assert [title for title, _ in shown] == ["Keyboard shortcuts", "README", "About Allot"]
    assert all(keys in shown[0][1] for keys, _ in SHORTCUTS) and "PgUp" not in shown[0][1]
    assert shown[1][1] == str(README) and README.is_file()
    assert version() == "0.1.0" and "0.1.0" in shown[2][1] == about_text()

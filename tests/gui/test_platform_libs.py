"""Qt's system libraries: ldd's answer read, Debian packages named, install-or-tell decided (no root needed)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import pytest

from gui import platform_libs as libs

# ldd on PySide6 6.11's libqxcb.so on a fresh Debian 12 (trimmed): each missing library twice.
LDD = """\
\tlinux-vdso.so.1 (0x00007ff98b6ce000)
\tlibQt6XcbQpa.so.6 => /site-packages/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007ff98b600000)
\tlibxkbcommon-x11.so.0 => not found
\tlibxcb-cursor.so.0 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxcb-util.so.1 => /lib/x86_64-linux-gnu/libxcb-util.so.1 (0x00007ff98b50e000)
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\t/lib64/ld-linux-x86-64.so.2 (0x00007ff98b6d0000)
"""


def test_parse_ldd_lists_each_missing_library_once_in_order():
    assert libs.parse_ldd(LDD) == ["libxkbcommon-x11.so.0", "libxcb-cursor.so.0", "libxcb-icccm.so.4",
                                   "libxcb-keysyms.so.1"]
    assert libs.parse_ldd("\tlibc.so.6 => /lib/libc.so.6 (0x1)\n") == []


@pytest.mark.parametrize(("soname", "package"), [
    ("libxcb-icccm.so.4", "libxcb-icccm4"),
    ("libxcb-keysyms.so.1", "libxcb-keysyms1"),
    ("libxcb-cursor.so.0", "libxcb-cursor0"),
    ("libxcb-render-util.so.0", "libxcb-render-util0"),
    ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),  # stem ends in a digit: a hyphen
    ("libX11-xcb.so.1", "libx11-xcb1"),  # package names are lower case
    ("libdbus-1.so.3", "libdbus-1-3"),
    ("libGL.so.1.7.0", "libgl1"),
    ("ld-linux-x86-64.so.2", None),
])
def test_debian_package_name(soname, package):
    assert libs.debian_package_name(soname) == package


def test_resolve_packages_checks_the_index_then_t64_then_apt_file():
    index = {"libxcb-icccm4", "libglib-2.0-0t64"}
    packages, unresolved = libs.resolve_packages(
        ["libxcb-icccm.so.4", "libglib-2.0.so.0", "libweird.so.9", "libnothing.so.1"],
        exists=index.__contains__,
        search={"libweird.so.9": "libweird-runtime"}.get)
    assert packages == ["libxcb-icccm4", "libglib-2.0-0t64", "libweird-runtime"]
    assert unresolved == ["libnothing.so.1"]


def test_root_with_apt_installs_without_sudo():
    found = libs.remedy(["libxcb-icccm.so.4"], ["libxcb-icccm4"], [], has_apt=True, is_root=True, escalate=True)
    assert found.can_install
    assert found.command == ("apt-get", "install", "-y", "--no-install-recommends", "libxcb-icccm4")


def test_a_user_without_sudo_is_told_the_one_command():
    found = libs.remedy(["libxcb-icccm.so.4", "libxcb-keysyms.so.1"], ["libxcb-icccm4", "libxcb-keysyms1"], [],
                        has_apt=True, is_root=False, escalate=False)
    assert not found.can_install
    assert found.command[:2] == ("sudo", "apt-get")
    line = libs.one_line(found)
    assert line.count("\n") == 0
    assert "libxcb-icccm.so.4, libxcb-keysyms.so.1" in line
    assert "sudo apt-get install -y --no-install-recommends libxcb-icccm4 libxcb-keysyms1" in line


def test_without_apt_the_libraries_are_still_named():
    found = libs.remedy(["libxcb-icccm.so.4"], [], ["libxcb-icccm.so.4"], has_apt=False, is_root=True,
                        escalate=True)
    assert not found.can_install and found.command == ()
    assert "libxcb-icccm.so.4" in libs.one_line(found) and "apt-get" not in libs.one_line(found)


@pytest.mark.parametrize(("environ", "screenshot", "platform", "expected"), [
    ({}, False, "linux", True),
    ({"QT_QPA_PLATFORM": "xcb"}, False, "linux", True),
    ({"QT_QPA_PLATFORM": "offscreen"}, False, "linux", False),
    ({}, True, "linux", False),  # --screenshot runs offscreen
    ({"WAYLAND_DISPLAY": "wayland-0"}, False, "linux", False),
    ({"QT_QPA_PLATFORM": "xcb", "WAYLAND_DISPLAY": "wayland-0"}, False, "linux", True),
    ({}, False, "darwin", False),
])
def test_uses_xcb(environ, screenshot, platform, expected):
    assert libs.uses_xcb(environ, screenshot, platform) is expected


def fake_runner(outputs: dict[str, tuple[int, str]]):
    """A Runner answering by program name, recording the commands."""
    calls: list[list[str]] = []

    def run(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
        calls.append(list(command))
        code, out = outputs.get(command[0], (127, ""))
        if command[0] == "apt-cache":
            code, out = (0, f"Package: {command[-1]}\n") if command[-1] in outputs["apt-cache"][1] else (100, "")
        return subprocess.CompletedProcess(list(command), code, out, "")

    run.calls = calls  # type: ignore[attr-defined]
    return run


def test_diagnose_reads_the_real_plugin_with_a_fake_ldd(monkeypatch, tmp_path):
    plugin = tmp_path / "libqxcb.so"
    plugin.write_bytes(b"")
    monkeypatch.setattr(libs, "xcb_plugin", lambda: plugin)
    monkeypatch.setattr(libs.shutil, "which", lambda name: f"/usr/bin/{name}" if name != "apt-file" else None)
    run = fake_runner({"ldd": (0, LDD), "apt-cache": (0, "libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 "
                                                          "libxkbcommon-x11-0"), "sudo": (1, "")})
    found = libs.diagnose(run, is_root=False)
    assert found is not None and not found.can_install  # sudo -n true failed: it asks a password
    assert found.packages == ("libxkbcommon-x11-0", "libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1")
    assert ["ldd", str(plugin)] in run.calls and ["sudo", "-n", "true"] in run.calls


def test_diagnose_is_none_when_nothing_is_missing(monkeypatch, tmp_path):
    plugin = tmp_path / "libqxcb.so"
    plugin.write_bytes(b"")
    monkeypatch.setattr(libs, "xcb_plugin", lambda: plugin)
    assert libs.diagnose(fake_runner({"ldd": (0, "\tlibc.so.6 => /lib/libc.so.6 (0x1)\n")})) is None


def test_main_refuses_to_start_qt_without_its_libraries(monkeypatch, capsys):
    import main

    found = libs.remedy(["libxcb-icccm.so.4"], ["libxcb-icccm4"], [], has_apt=True, is_root=False, escalate=False)
    monkeypatch.setattr(libs, "diagnose", lambda: found)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(libs.sys, "platform", "linux")
    assert main.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("allot: error: the desktop app needs system libraries that are missing: libxcb-icccm.so.4")
    assert err.count("\n") == 1


def test_xcb_plugin_is_found_in_the_installed_pyside6():
    plugin = libs.xcb_plugin()
    assert plugin is not None and plugin.name == "libqxcb.so" and plugin.is_file()

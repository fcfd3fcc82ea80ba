"""The system libraries Qt's xcb platform plugin needs, and how to get the missing ones.

PySide6's wheel carries Qt but not the X11 client libraries its xcb plugin
links against (libxcb-cursor, libxcb-icccm, libxcb-keysyms, ...). Where one is
missing, creating a QApplication aborts the process (SIGABRT) with a message
that names one library at most. So install.py and main.py read the plugin's
real needs with `ldd` (no list is guessed here), find the missing ones, and
name the Debian packages that provide them.

Library -> package: Debian's shared-library naming rule (policy 8.1: the
soname's stem plus its version, a hyphen between two digits:
libxcb-icccm.so.4 -> libxcb-icccm4, libxkbcommon-x11.so.0 -> libxkbcommon-x11-0),
checked against the package index with `apt-cache show`; the 64-bit time_t
rename (`...t64`) is tried next, then `apt-file` where it is installed.

Stdlib only, and nothing here imports Qt or core: install.py runs it before
any dependency is installed, main.py before Qt loads a platform plugin.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PLUGIN = Path("Qt", "plugins", "platforms", "libqxcb.so")
_NOT_FOUND = re.compile(r"^\s*(\S+)\s*=>\s*not found\s*$")
_SONAME = re.compile(r"^(lib.+)\.so\.(\d+(?:\.\d+)*)$")

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_quietly(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run a command for its output; a missing program is a failed run, not an exception."""
    try:
        return subprocess.run(list(command), capture_output=True, text=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        return subprocess.CompletedProcess(list(command), 127, "", str(error))


def xcb_plugin() -> Path | None:
    """PySide6's xcb platform plugin, or None (PySide6 not installed, or not a Linux wheel)."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / PLUGIN
        if path.is_file():
            return path
    return None


def parse_ldd(output: str) -> list[str]:
    """The libraries `ldd` reports as 'not found', each once, in order."""
    missing: list[str] = []
    for line in output.splitlines():
        match = _NOT_FOUND.match(line)
        if match and match.group(1) not in missing:
            missing.append(match.group(1))
    return missing


def missing_libraries(plugin: Path, run: Runner = run_quietly) -> list[str]:
    """What the plugin links against and the dynamic loader cannot find ([] if ldd is absent)."""
    result = run(["ldd", str(plugin)])
    return parse_ldd(result.stdout) if result.returncode == 0 else []


def debian_package_name(soname: str) -> str | None:
    """Debian's name for the package of a shared library: libxcb-icccm.so.4 -> libxcb-icccm4.

    None when the name is not of the form libNAME.so.VERSION.
    """
    match = _SONAME.match(soname)
    if match is None:
        return None
    stem, version = match.group(1).lower(), match.group(2).split(".")[0]
    return f"{stem}-{version}" if stem[-1].isdigit() else f"{stem}{version}"


def package_exists(package: str, run: Runner = run_quietly) -> bool:
    """True when the package index knows the package (apt-cache show: no root, no network)."""
    result = run(["apt-cache", "show", "--no-all-versions", package])
    return result.returncode == 0 and f"Package: {package}" in result.stdout


def apt_file_package(soname: str, run: Runner = run_quietly) -> str | None:
    """The package apt-file finds shipping the library, where apt-file is installed and updated."""
    result = run(["apt-file", "search", "--package-only", "--regexp", f"/{re.escape(soname)}$"])
    names = result.stdout.split() if result.returncode == 0 else []
    return names[0] if names else None


def resolve_packages(sonames: Sequence[str], exists: Callable[[str], bool],
                     search: Callable[[str], str | None]) -> tuple[list[str], list[str]]:
    """(packages to install, libraries no package was found for), by the naming rule
    checked against the index, then its t64 variant, then `search` (apt-file)."""
    packages: list[str] = []
    unresolved: list[str] = []
    for soname in sonames:
        name = debian_package_name(soname)
        candidates = [name, f"{name}t64"] if name else []
        found = next((candidate for candidate in candidates if exists(candidate)), None) or search(soname)
        if found is None:
            unresolved.append(soname)
        elif found not in packages:
            packages.append(found)
    return packages, unresolved


def uses_xcb(environ: Mapping[str, str], screenshot: bool, platform: str | None = None) -> bool:
    """Whether a QApplication started now would load the xcb plugin.

    Not for a screenshot (offscreen), not where QT_QPA_PLATFORM names another
    platform, and not in a Wayland session that Qt picks first; Linux only.
    """
    if not (platform or sys.platform).startswith("linux") or screenshot:
        return False
    chosen = environ.get("QT_QPA_PLATFORM", "").strip()
    if chosen:
        return chosen.split(";")[0].split(":")[0] == "xcb"
    return not environ.get("WAYLAND_DISPLAY")


@dataclass(frozen=True)
class Remedy:
    """What to do about missing libraries: run `command` ourselves, or tell the user to."""

    missing: tuple[str, ...]
    packages: tuple[str, ...]
    unresolved: tuple[str, ...]
    command: tuple[str, ...]  # apt-get install ... (with sudo when not root); () without apt-get
    can_install: bool  # root or password-less sudo, apt-get present, a package to install


def can_escalate(is_root: bool, run: Runner = run_quietly) -> bool:
    """Root, or sudo that asks no password."""
    return is_root or (shutil.which("sudo") is not None and run(["sudo", "-n", "true"]).returncode == 0)


def remedy(missing: Sequence[str], packages: Sequence[str], unresolved: Sequence[str], *, has_apt: bool,
           is_root: bool, escalate: bool) -> Remedy:
    """Decide between installing and printing the one command (pure: tested without root)."""
    command: tuple[str, ...] = ()
    if has_apt and packages:
        command = ("apt-get", "install", "-y", "--no-install-recommends", *packages)
        if not is_root:
            command = ("sudo", *command)
    return Remedy(tuple(missing), tuple(packages), tuple(unresolved), command,
                  can_install=bool(command) and escalate)


def diagnose(run: Runner = run_quietly, is_root: bool | None = None) -> Remedy | None:
    """None when the xcb plugin has every library it needs (or there is no plugin); else the remedy."""
    plugin = xcb_plugin()
    if plugin is None or shutil.which("ldd") is None:
        return None
    missing = missing_libraries(plugin, run)
    if not missing:
        return None
    root = os.geteuid() == 0 if is_root is None else is_root
    has_apt = shutil.which("apt-get") is not None
    if has_apt:
        search = (lambda soname: apt_file_package(soname, run)) if shutil.which("apt-file") else (lambda _: None)
        packages, unresolved = resolve_packages(missing, lambda name: package_exists(name, run), search)
        if unresolved and not packages and not has_package_lists():
            # a fresh container: no index yet, so trust the naming rule (apt-get update runs first)
            packages = [name for name in map(debian_package_name, missing) if name]
            unresolved = [soname for soname in missing if debian_package_name(soname) is None]
    else:
        packages, unresolved = [], list(missing)
    return remedy(missing, packages, unresolved, has_apt=has_apt, is_root=root,
                  escalate=can_escalate(root, run))


def has_package_lists(lists: Path = Path("/var/lib/apt/lists")) -> bool:
    """Whether `apt-get update` has ever filled the package index."""
    try:
        return any(path.name.endswith(("_Packages", "_Packages.lz4", "_Packages.gz", "_Packages.xz"))
                   for path in lists.iterdir())
    except OSError:
        return False


def one_line(found: Remedy) -> str:
    """The message main.py prints instead of Qt's abort."""
    libraries = ", ".join(found.missing)
    if found.command:
        how = f"install them with: {' '.join(found.command)}"
        if found.unresolved:
            how += f" (no package found for {', '.join(found.unresolved)})"
    else:
        how = "install the packages of your distribution that provide them"
    return (f"allot: error: the desktop app needs system libraries that are missing: {libraries}; {how} "
            "(or run: python3 install.py)")

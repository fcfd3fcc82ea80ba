"""A small on-disk cache of JSON results, in the user cache dir (cache_root()).

Used for what is slow to recompute and depends only on its inputs: layer
graphs measured on the meta device, accelerate's placement of a model, and
the module trees it is placed by (core.model.module_tree).
Each entry is one JSON file named by a hash of its key; the file repeats the
key and a format version, so a hash collision, a half-written file (never
happens: core.system.durable) or an entry of another version reads as a miss and is
recomputed. Versions of the packages and of Allot's own measuring code are
part of every key: an upgrade never reads a stale entry.

    cache_dir()/graphs/3fa9....json      {"format": "allot-cache", "version": 1,
                                          "key": {...}, "value": {...}}
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from core import REPO_ROOT

FORMAT = "allot-cache"
VERSION = 1
KINDS = ("graphs", "accelerate", "modules")  # the folders `main.py cache --clear` removes
CACHE_DIR_ENV = "ALLOT_CACHE_DIR"
_bypassed = False


def cache_root() -> Path:
    """Where Allot keeps what it can recompute (layer graphs, host speed): $ALLOT_CACHE_DIR,
    else $XDG_CACHE_HOME/allot, else ~/.cache/allot. Deleting it loses nothing but time.
    (Here, not beside core.project.config_dir: the planner uses it, and project imports the planner.)"""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "allot"


def entry_path(kind: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(_canonical(key).encode()).hexdigest()[:40]
    return cache_root() / kind / f"{digest}.json"


@contextlib.contextmanager
def bypassed() -> Iterator[None]:
    """Within it, every entry reads as missing and nothing is written (`--no-cache`)."""
    global _bypassed
    before, _bypassed = _bypassed, True
    try:
        yield
    finally:
        _bypassed = before


def is_bypassed() -> bool:
    """Whether entries read as missing now (within `bypassed()`)."""
    return _bypassed


def read_entry(kind: str, key: dict[str, Any]) -> Any | None:
    """The value stored under `key`, or None (missing, unreadable, corrupt or another version)."""
    if _bypassed:
        return None
    try:
        data = json.loads(entry_path(kind, key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
        return None
    if _canonical(data.get("key")) != _canonical(key):
        return None
    return data.get("value")


def write_entry(kind: str, key: dict[str, Any], value: Any) -> None:
    """Store a value (best effort: a read-only or full cache dir only costs time later)."""
    from core.system.durable import atomic_write_json

    if _bypassed:
        return
    try:
        atomic_write_json(entry_path(kind, key), {"format": FORMAT, "version": VERSION, "key": key,
                                                  "value": value}, indent=0)
    except OSError:
        pass


def clear_cache() -> tuple[int, int]:
    """Remove every entry Allot keeps (and nothing else in the folder): (files, bytes) removed."""
    files = size = 0
    for kind in KINDS:
        folder = cache_root() / kind
        if not folder.is_dir():
            continue
        for path in folder.glob("*.json"):
            files += 1
            size += path.stat().st_size
        shutil.rmtree(folder, ignore_errors=True)
    return files, size


def cache_summary() -> dict[str, tuple[int, int]]:
    """Entries and bytes per kind."""
    result = {}
    for kind in KINDS:
        paths = list((cache_root() / kind).glob("*.json"))
        result[kind] = (len(paths), sum(path.stat().st_size for path in paths))
    return result


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions, read from package metadata (importing nothing)."""
    return dict(_package_versions(names))


@functools.cache  # read once a process: a key is made for every problem a plan builds
def _package_versions(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "none"
    return tuple(versions.items())


@functools.cache  # the source files of a running process do not change under it
def code_version(*relative_paths: str) -> str:
    """A digest of Allot's own source files that a result depends on."""
    digest = hashlib.sha256()
    for relative in relative_paths:
        digest.update(relative.encode())
        digest.update((REPO_ROOT / relative).read_bytes())
    return digest.hexdigest()[:16]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))

"""Durable writes: a file is replaced whole or not at all, even by kill -9 or a power cut.

Every file Allot writes for the user (projects, the recent list, exports,
run directories, checkpoints, caches) goes through `write_atomically`: a temp
file with a unique name in the same folder (so the rename cannot cross file
systems and two writers never share a temp), fsync, rename over the target,
fsync the folder (so the rename itself survives a power cut). A writer killed
at any moment leaves the old file intact (and at worst a `.NAME.*.tmp`).

`durable=False` keeps the whole-or-nothing replace but skips the two fsyncs
(about 12 ms on the shared VM's disk): for a progress figure that the next
write supersedes, where a power cut may lose the last update but never tears
the file (a training run's step count in status.json, core.training.job).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from core.errors import InputError


def write_atomically(path: Path | str, write: Callable[[IO[bytes]], object], durable: bool = True) -> None:
    """Replace `path` with what `write` puts into the binary handle it is given (and make the
    replacement survive a power cut, unless `durable` is False).

    Raises:
        OSError: the folder or file cannot be written (the old file is untouched).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as temp:
            write(temp)
            temp.flush()
            if durable:
                os.fsync(temp.fileno())
        _keep_mode(path, temp_name)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    if durable:
        fsync_directory(path.parent)


def atomic_write_bytes(path: Path | str, data: bytes, durable: bool = True) -> None:
    """Replace a file with `data` durably (see the module docstring)."""
    write_atomically(path, lambda handle: handle.write(data), durable)


def atomic_write_text(path: Path | str, text: str, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable)


def atomic_write_json(path: Path | str, value: Any, indent: int = 1, sort_keys: bool = True,
                      durable: bool = True) -> None:
    atomic_write_text(path, json.dumps(value, indent=indent, sort_keys=sort_keys) + "\n", durable)


def read_json(path: Path, what: str) -> dict[str, Any]:
    """Read a JSON object, turning a missing or broken file into one InputError line."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except OSError as error:
        raise InputError(f"cannot read {what} {path}: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{what} {path} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise InputError(f"{what} {path} is not a JSON object")
    return value


def fsync_directory(path: Path | str) -> None:
    """Make renames and creations inside a directory durable (no-op where unsupported)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _keep_mode(path: Path, temp_name: str) -> None:
    """mkstemp makes 0600 files: a replaced file keeps its mode, a new one gets the umask's."""
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(temp_name, mode)

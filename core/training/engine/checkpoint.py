"""Checkpoints: one directory per step, one file per stage, committed atomically.

    checkpoints/step_00000100/
        stage_0.pt ... stage_{S-1}.pt   plain dicts of tensors and numbers:
                                        torch.load(path, weights_only=True) loads them
        manifest.json                   step, stage files with byte sizes and SHA-256

Every writer puts its stage file into `checkpoints/.tmp-step_00000100/` (temp
file, fsync, rename). When all are there, one writer per host adds the
manifest and renames the directory to `step_00000100` (a single atomic
rename), then fsyncs the parent. A directory without a manifest is never
read, leftovers named `.tmp-*` are removed at the next start, so a kill at any
moment leaves the previous checkpoint intact.

A stage file holds:
    {"format": 1, "step": int, "stage": int, "layers": [names],
     "model": {GPT-named parameter -> tensor},
     "optimizer": {"state": {GPT-named parameter -> {"exp_avg": ..., "step": ...}}},
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor, ...]}}
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.system.durable import atomic_write_json, fsync_directory, read_json, write_atomically

FORMAT = 1
_STEP_DIR = re.compile(r"^step_(\d{8})$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def stage_filename(stage_index: int) -> str:
    return f"stage_{stage_index}.pt"


def temp_dir(checkpoints: Path, step: int) -> Path:
    """Where the stage files of a checkpoint in progress go."""
    return checkpoints / f".tmp-{checkpoint_name(step)}"


def write_stage_file(directory: Path, stage_index: int, payload: dict[str, Any]) -> None:
    """torch.save one stage's payload durably into a checkpoint in progress."""
    import torch

    write_atomically(directory / stage_filename(stage_index), lambda handle: torch.save(payload, handle))


def commit_checkpoint(checkpoints: Path, step: int, num_stages: int, extra: dict[str, Any] | None = None) -> Path:
    """Seal the checkpoint in progress: manifest, then one atomic rename."""
    staging = temp_dir(checkpoints, step)
    fsync_directory(staging)
    files = {}
    for path in sorted(staging.glob("stage_*.pt")):
        index = path.stem.split("_")[1]
        files[index] = {"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}
    manifest = {"format": FORMAT, "step": step, "num_stages": num_stages, "stages": files,
                "saved_at": time.time(), **(extra or {})}
    atomic_write_json(staging / "manifest.json", manifest)
    final = checkpoints / checkpoint_name(step)
    if final.exists():  # only a checkpoint that a resume has gone back past
        shutil.rmtree(final)
    os.rename(staging, final)
    fsync_directory(checkpoints)
    return final


def list_checkpoints(checkpoints: Path) -> list[Path]:
    """Committed checkpoints (with a manifest), oldest first."""
    if not checkpoints.is_dir():
        return []
    found = [path for path in checkpoints.iterdir()
             if _STEP_DIR.match(path.name) and (path / "manifest.json").is_file()]
    return sorted(found, key=lambda path: path.name)


def latest_checkpoint(checkpoints: Path) -> Path | None:
    found = list_checkpoints(checkpoints)
    return found[-1] if found else None


def checkpoint_step(path: Path) -> int:
    match = _STEP_DIR.match(path.name)
    if match is None:
        raise ValueError(f"{path} is not a checkpoint directory")
    return int(match.group(1))


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check every stage file against the manifest's size and SHA-256.

    Raises:
        InputError: a file is missing, truncated or altered.
    """
    manifest = read_json(path / "manifest.json", "checkpoint manifest")
    stages = manifest.get("stages")
    if not isinstance(stages, dict) or not stages:
        raise InputError(f"checkpoint {path} is corrupt: its manifest lists no stage files")
    for entry in stages.values():
        file = path / str(entry.get("file"))
        if not file.is_file():
            raise InputError(f"checkpoint {path} is corrupt: {file.name} is missing")
        if file.stat().st_size != entry.get("bytes") or _sha256(file) != entry.get("sha256"):
            raise InputError(f"checkpoint {path} is corrupt: {file.name} does not match its manifest "
                             "(truncated or altered)")
    return manifest


def load_stage_file(path: Path, stage_index: int) -> dict[str, Any]:
    """One stage's payload, on the CPU, with torch.load(weights_only=True)."""
    import torch

    payload = torch.load(path / stage_filename(stage_index), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"checkpoint {path} holds an unknown format")
    return payload


def load_model_state(path: Path) -> dict[str, Any]:
    """The whole model's state dict, merged from a checkpoint's stage files."""
    manifest = verify_checkpoint(path)
    state: dict[str, Any] = {}
    for index in sorted(manifest["stages"], key=int):
        state.update(load_stage_file(path, int(index))["model"])
    return state


def prune_checkpoints(checkpoints: Path, keep: int) -> None:
    """Delete all but the newest `keep` committed checkpoints.

    Each goes in one atomic rename out of the committed names first, then is removed: a
    reader (a resume, the app) or a kill -9 in the middle never meets a committed
    checkpoint with its manifest but without some of its stage files.
    """
    for path in list_checkpoints(checkpoints)[:-keep]:
        doomed = checkpoints / f".old-{path.name}"
        try:
            os.rename(path, doomed)
        except OSError:  # another process of the run pruned it first
            continue
        shutil.rmtree(doomed, ignore_errors=True)


def remove_partial(checkpoints: Path) -> None:
    """Remove checkpoints that were in progress, or being pruned, when a job died."""
    if checkpoints.is_dir():
        for pattern in (".tmp-*", ".old-*"):
            for path in checkpoints.glob(pattern):
                shutil.rmtree(path, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

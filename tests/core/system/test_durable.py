"""Durable writes: a writer killed at any moment leaves the old file whole.

The first test kills a real writer process (SIGKILL) in the middle of a large
write; the others crash each user-file entry point just before its rename and
check the user's old file is untouched (the old code wrote some of them in place).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import main
from core.model.config import GPTSize, ModelChoice
from core.planning.setup import TrainingSetup
from core.project import (
    DeviceEntry,
    Project,
    recent_projects,
    remember_project,
    save_project,
)
from core.system.durable import atomic_write_json, atomic_write_text, write_atomically

ROOT = Path(__file__).resolve().parents[3]
OLD = '{"old": true}\n'

WRITER = """
import sys, time
from pathlib import Path
from core.system.durable import write_atomically

target, marker = Path(sys.argv[1]), Path(sys.argv[2])
chunk = b"x" * (8 << 20)

def write(handle):
    for i in range(64):  # 512 MiB if never killed
        handle.write(chunk)
        if i == 3:
            handle.flush()
            marker.write_text("writing")
            time.sleep(60)

write_atomically(target, write)
"""


class Crash(BaseException):
    """Stands for kill -9 at the rename: nothing after it runs."""


@pytest.fixture
def crash_at_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: object) -> None:
        raise Crash()

    monkeypatch.setattr(os, "replace", crash)


def test_sigkill_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    target, marker = tmp_path / "big.bin", tmp_path / "marker"
    target.write_text(OLD)
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(marker)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert process.poll() is None, "the writer ended before it was killed"
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.02)
        temps = list(tmp_path.glob(".big.bin.*.tmp"))
        assert temps and temps[0].stat().st_size >= 32 << 20  # really mid-write
        assert target.read_text() == OLD
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert target.read_text() == OLD


def test_a_write_replaces_the_file_and_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text(OLD)
    target.chmod(0o640)
    atomic_write_json(target, {"new": 1})
    assert json.loads(target.read_text()) == {"new": 1}
    assert target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_failed_write_removes_its_temp_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text(OLD)

    def fail(handle: object) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomically(target, fail)
    assert target.read_text() == OLD
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_the_helper_fsyncs_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    atomic_write_text(tmp_path / "a.txt", "hello")
    assert len(synced) == 2  # the temp file, then the folder


def test_a_progress_update_replaces_whole_without_fsync_and_the_final_status_syncs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # status.json's step count, written on the training thread about once a second: an fsync pair
    # there cost ~12 ms a write on the shared VM; the last update before the final status is durable
    from core.training.job import StatusFollower
    from core.training.run_dir import RunPaths, read_status

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    atomic_write_text(tmp_path / "a.txt", "hello", durable=False)
    assert (tmp_path / "a.txt").read_text() == "hello" and synced == []
    paths = RunPaths(tmp_path / "run")
    follower = StatusFollower(paths)
    follower.update({"step": 3, "loss": 2.5})
    assert read_status(paths.root).step == 3 and synced == []
    follower.flush()
    assert len(synced) == 2


def a_project() -> Project:
    device = DeviceEntry(name="cpu", kind="host", memory_total_bytes=8 << 30, budget_bytes=4 << 30)
    return Project(devices=(device,), model=ModelChoice(source="custom", custom=GPTSize(layers=2, d_model=64, heads=2)),
                   setup=TrainingSetup(), solver="exact", view="plan")


def test_project_save_crashing_keeps_the_old_project(tmp_path: Path, crash_at_rename: None) -> None:
    path = tmp_path / "p.allot.json"
    path.write_text(OLD)
    with pytest.raises(Crash):
        save_project(a_project(), path)
    assert path.read_text() == OLD


def test_recent_list_crashing_keeps_the_old_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOT_CONFIG_DIR", str(tmp_path))
    remember_project(tmp_path / "a.allot.json")
    before = (tmp_path / "recent.json").read_text()

    def crash(*args: object) -> None:
        raise Crash()

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(Crash):
        remember_project(tmp_path / "b.allot.json")
    assert (tmp_path / "recent.json").read_text() == before
    assert recent_projects() == [(tmp_path / "a.allot.json").resolve()]


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--export-problem", "--export"])
def test_plan_exports_crashing_keep_the_old_file(tmp_path: Path, crash_at_rename: None, flag: str) -> None:
    path = tmp_path / "out.json"
    path.write_text(OLD)
    extra = ["--export-problem", str(path)] if flag == "--export-problem" else ["--export", "accelerate", str(path)]
    with pytest.raises(Crash):
        main.main(["plan", "--model", "gpt-nano", "--devices", "2xA10", "--seq", "32", "--no-compare",
                   "--json", *extra])
    assert path.read_text() == OLD


def test_every_user_file_writer_uses_the_one_helper() -> None:
    # One helper for all: no other module writes a user file in place or renames by itself.
    offenders = []
    for folder in ("core", "cli", "gui"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if path.name == "durable.py":
                continue
            for needle in (".write_text(", ".write_bytes(", "os.replace("):
                if needle in text:
                    offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert offenders == []

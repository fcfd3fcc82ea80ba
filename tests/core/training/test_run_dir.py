"""Run directories: atomic writes, refusing to overwrite, status and dead jobs;
checkpoints: atomic commit, verification, pruning."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.errors import InputError
from core.training.engine import checkpoint as ckpt
from core.training.run_dir import (
    RunPaths,
    atomic_write_json,
    check_new_run_dir,
    read_json,
    read_status,
    write_status,
)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "status.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert read_json(target, "x") == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_a_new_run_needs_an_empty_or_missing_directory(tmp_path):
    check_new_run_dir(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_new_run_dir(tmp_path / "empty")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    with pytest.raises(InputError, match="already holds another run"):
        check_new_run_dir(tmp_path / "run")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="already holds files"):
        check_new_run_dir(tmp_path / "mine")


def test_a_running_status_whose_job_is_gone_reads_failed(tmp_path):
    paths = RunPaths(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    write_status(paths, state="running", pids={"job": child.pid}, step=3)
    status = read_status(tmp_path)
    assert status.state == "failed" and status.alive is False
    assert "ended without a status" in status.error
    write_status(paths, pids={"job": os.getpid()})
    status = read_status(tmp_path)
    assert status.state == "running" and status.alive is True


def _stage_files(directory, step, stages=2):
    for index in range(stages):
        payload = {"format": ckpt.FORMAT, "step": step, "stage": index,
                   "model": {"w": torch.full((3,), float(step))}, "optimizer": {"state": {}},
                   "rng": {"torch": torch.get_rng_state()}}
        ckpt.write_stage_file(ckpt.temp_dir(directory, step), index, payload)


def test_checkpoints_commit_atomically_and_load_with_weights_only(tmp_path):
    _stage_files(tmp_path, 5)
    assert ckpt.latest_checkpoint(tmp_path) is None  # not committed: never read
    ckpt.commit_checkpoint(tmp_path, 5, 2)
    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest.name == "step_00000005"
    ckpt.verify_checkpoint(latest)
    loaded = torch.load(latest / "stage_1.pt", weights_only=True)
    assert torch.equal(loaded["model"]["w"], torch.full((3,), 5.0))
    assert ckpt.load_model_state(latest)["w"].tolist() == [5.0, 5.0, 5.0]


def test_a_partial_checkpoint_is_ignored_and_cleaned(tmp_path):
    _stage_files(tmp_path, 5)
    ckpt.commit_checkpoint(tmp_path, 5, 2)
    _stage_files(tmp_path, 10, stages=1)  # the job died while writing step 10
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000005"
    ckpt.remove_partial(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000005"]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_checkpoint_is_detected(tmp_path, damage):
    _stage_files(tmp_path, 5)
    path = ckpt.commit_checkpoint(tmp_path, 5, 2)
    stage = path / "stage_0.pt"
    data = bytearray(stage.read_bytes())
    if damage == "truncate":
        stage.write_bytes(data[: len(data) // 2])
    else:
        data[len(data) // 2] ^= 0xFF
        stage.write_bytes(bytes(data))
    with pytest.raises(InputError, match="is corrupt"):
        ckpt.verify_checkpoint(path)


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    for step in (5, 10, 15, 20):
        _stage_files(tmp_path, step)
        ckpt.commit_checkpoint(tmp_path, step, 2)
        ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000015", "step_00000020"]


def test_a_prune_cut_short_leaves_no_committed_checkpoint_without_its_files(tmp_path, monkeypatch):
    """A kill -9 (or a reader) in the middle of a prune: the checkpoint being removed has lost
    stage_0.pt but kept its manifest. It must not be listed as committed, and is cleaned up."""
    for step in (5, 10):
        _stage_files(tmp_path, step)
        ckpt.commit_checkpoint(tmp_path, step, 2)

    def removal_cut_short(path, ignore_errors=False):
        (Path(path) / "stage_0.pt").unlink()  # rmtree removes files one by one: it died after one

    monkeypatch.setattr(ckpt.shutil, "rmtree", removal_cut_short)
    ckpt.prune_checkpoints(tmp_path, keep=1)
    monkeypatch.undo()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000010"]
    for path in ckpt.list_checkpoints(tmp_path):
        ckpt.verify_checkpoint(path)  # every committed checkpoint is whole
    ckpt.remove_partial(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000010"]


def test_a_status_reads_as_one_of_the_run_states(tmp_path):
    paths = RunPaths(tmp_path)
    for state in ("running", "finished", "stopped", "failed"):
        write_status(paths, state=state, host="elsewhere")  # another host: no process check
        assert read_status(tmp_path).state == state
    write_status(paths, state="exploded", host="elsewhere")  # not a state Allot writes
    assert read_status(tmp_path).state == "failed"

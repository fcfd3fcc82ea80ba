"""One torchrun command builder: the engine starts what the app exports, flag for flag."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest

from core.planning.export import torchrun_commands
from core.system.torchrun import WORKER_MODULE, torchrun_command
from core.training.config import TrainConfig
from core.training.engine.pipeline_launch import node_commands
from core.training.engine.pipeline_launch import torchrun_command as engine_command


def flags(command: list[str] | str) -> list[str]:
    """The command after `python -m LAUNCHER`: what torchrun is told."""
    words = command.split() if isinstance(command, str) else command
    return words[3:]


def test_the_engine_and_the_export_launch_hosts_alike(tmp_path) -> None:
    config = replace(TrainConfig(), nnodes=2, rdzv_endpoint="node0:29500")
    exported = torchrun_commands(stages=4, nnodes=2, endpoint="node0:29500", run_dir=str(tmp_path))
    started = [engine_command(tmp_path, replace(config, node_rank=rank), 4, "node0:29500") for rank in (0, 1)]
    assert [flags(node.command) for node in exported] == [flags(command) for command in started]
    assert started[1][:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert flags(started[1])[:6] == ["--nnodes", "2", "--node-rank", "1", "--nproc-per-node", "2"]
    assert [flags(line) for line in node_commands(tmp_path, config, 4)] == [flags(c) for c in started]


def test_one_host_runs_on_loopback_with_the_same_rendezvous(tmp_path) -> None:
    started = engine_command(tmp_path, TrainConfig(), 3, "127.0.0.1:29500")
    exported = torchrun_command(1, 0, 3, "127.0.0.1:29500", tmp_path)
    assert started[2] == "core.training.engine.loopback_run" and exported[2] == "torch.distributed.run"
    assert flags(started) == flags(exported)[:-5] + ["--local-addr", "127.0.0.1"] + flags(exported)[-5:]
    assert "--node-rank" not in exported and exported[exported.index("--rdzv-backend") + 1] == "c10d"
    assert exported[-2:] == [WORKER_MODULE, str(tmp_path)]


def test_loopback_is_for_one_host() -> None:
    with pytest.raises(ValueError, match="one host"):
        torchrun_command(2, 0, 1, "h:1", "r", loopback=True)

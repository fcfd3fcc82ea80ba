"""Exports of hybrid plans: d x S torchrun processes in rank order (rank = replica * S + stage)."""

import pytest

from core.errors import InputError
from core.planning.export import torchrun_commands


def test_torchrun_covers_every_replica_and_stage():
    nodes = torchrun_commands(stages=3, nnodes=2, endpoint="node0:29500", run_dir="runs/x", replicas=2)
    assert [node.processes for node in nodes] == [((0, 0), (0, 1), (0, 2)), ((1, 0), (1, 1), (1, 2))]
    assert all("--nproc-per-node 3" in node.command for node in nodes)
    one = torchrun_commands(stages=2, nnodes=1, endpoint="h:1", run_dir="r", replicas=4)
    assert one[0].processes == ((0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1))


def test_processes_must_split_over_the_hosts():
    with pytest.raises(InputError, match="6 processes \\(2 replicas x 3 stages\\) do not split evenly over 4 hosts"):
        torchrun_commands(stages=3, nnodes=4, endpoint="h:1", run_dir="r", replicas=2)


def test_tensor_parallel_groups_run_whole_on_one_host():
    """2 replicas x 2 stages x t = 2: 8 processes, rank = (replica x 2 + stage) x 2 + tp rank."""
    nodes = torchrun_commands(stages=2, nnodes=2, endpoint="h:1", run_dir="r", replicas=2, tensor_parallel=2)
    assert [node.processes for node in nodes] == [((0, 0), (0, 0), (0, 1), (0, 1)), ((1, 0), (1, 0), (1, 1), (1, 1))]
    assert all("--nproc-per-node 4" in node.command for node in nodes)
    # 1 replica x 1 stage x t = 4 over 2 hosts would split the group
    with pytest.raises(InputError, match="with each tensor-parallel group of 4 on one host: choose 1 hosts"):
        torchrun_commands(stages=1, nnodes=2, endpoint="h:1", run_dir="r", tensor_parallel=4)

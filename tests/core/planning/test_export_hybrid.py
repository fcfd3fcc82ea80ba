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

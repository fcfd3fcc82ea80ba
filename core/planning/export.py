"""What the app exports from a plan: JSON, and the commands that run it on several hosts.

    torchrun_commands(stages=8, nnodes=2, endpoint="node0:29500", run_dir="runs/llama")
    -> one command per host; host R runs stages R*K .. R*K+K-1 (K = stages / nnodes)

A plan of d replicas x S stages runs d * S processes, rank = replica * S +
stage (core.planning.plan.rank_of); host R runs ranks R*K .. R*K+K-1 with
K = d * S / nnodes.

Each command is core.system.torchrun's, the one the pipeline engine
(core.training.engine.pipeline_launch) starts: the same rendezvous flags.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from core.errors import InputError
from core.planning.plan import Plan, replica_and_stage
from core.system.torchrun import torchrun_command


@dataclass(frozen=True)
class NodeCommand:
    """What one host runs: its rank, the stage (and replica) of each of its
    processes, and the command line."""

    node_rank: int
    stages: tuple[int, ...]
    command: str
    replicas: tuple[int, ...] = ()  # per process; empty: all replica 0

    @property
    def processes(self) -> tuple[tuple[int, int], ...]:
        """(replica, stage) of each process this host runs."""
        replicas = self.replicas or (0,) * len(self.stages)
        return tuple(zip(replicas, self.stages))


def plan_json(plan: Plan) -> str:
    """The plan in docs/design.md's "The answer format", as `main.py plan --json` writes it."""
    return json.dumps(plan.to_dict(), indent=2) + "\n"


def torchrun_commands(stages: int, nnodes: int, endpoint: str, run_dir: str,
                      python: str = "python", replicas: int = 1, tensor_parallel: int = 1) -> list[NodeCommand]:
    """One torchrun command per host, the plan's replicas x stages x t processes split evenly in rank
    order (rank = (replica x S + stage) x t + tp rank), a tensor-parallel group on one host.

    Raises:
        InputError: no stages, nnodes below 1, processes not a multiple of nnodes (or a group of t
            split over hosts), or no endpoint.
    """
    if stages < 1 or replicas < 1 or tensor_parallel < 1:
        raise InputError("the plan has no stages to launch")
    t = tensor_parallel
    processes = stages * replicas * t
    what = f"{stages} stages" if processes == stages else (
        f"{processes} processes ({replicas} replicas x {stages} stages" + (f" x tensor-parallel {t})" if t > 1 else ")"))
    fitting = [n for n in divisors(processes) if (processes // n) % t == 0]
    if nnodes < 1 or processes % nnodes or (processes // nnodes) % t:
        raise InputError(f"{what} do not split evenly over {nnodes} hosts"
                         + (f" with each tensor-parallel group of {t} on one host" if t > 1 else "")
                         + f": choose {', '.join(str(n) for n in fitting)} hosts")
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"rendezvous endpoint '{endpoint}' must be HOST:PORT (the address of host 0)")
    per_node = processes // nnodes
    commands = []
    for node in range(nnodes):
        held = [replica_and_stage(rank // t, stages) for rank in range(node * per_node, (node + 1) * per_node)]
        commands.append(NodeCommand(node, tuple(s for _, s in held),
                                    shlex.join(torchrun_command(nnodes, node, per_node, endpoint, run_dir, python)),
                                    tuple(r for r, _ in held) if replicas > 1 else ()))
    return commands


def divisors(count: int) -> list[int]:
    """The host counts that split `count` processes evenly."""
    return [n for n in range(1, count + 1) if count % n == 0]


def device_map_json(device_map: dict[str, Any]) -> str:
    """An accelerate device_map as readable JSON (from core.planning.accelerate_baseline)."""
    return json.dumps(device_map, indent=2) + "\n"

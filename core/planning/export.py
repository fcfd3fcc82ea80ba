"""What the app exports from a plan: JSON, and the commands that run it on several hosts.

    torchrun_commands(stages=8, nnodes=2, endpoint="node0:29500", run_dir="runs/llama")
    -> one command per host; host R runs stages R*K .. R*K+K-1 (K = stages / nnodes)

Several hosts rendezvous statically: c10d ignores --node-rank and orders
hosts by arrival, while each host must always get the same stages (its run
directory holds their checkpoints), as core.training.engine.pipeline does.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from core.errors import InputError
from core.planning.plan import Plan

WORKER_MODULE = "core.training.pipeline_worker"  # the stage process torchrun starts


@dataclass(frozen=True)
class NodeCommand:
    """What one host runs: its rank, the stages it holds, and the command line."""

    node_rank: int
    stages: tuple[int, ...]
    command: str


def plan_json(plan: Plan) -> str:
    """The plan in DESIGN.md's answer format, as `main.py plan --json` writes it."""
    return json.dumps(plan.to_dict(), indent=2) + "\n"


def torchrun_command(nnodes: int, node_rank: int, nproc_per_node: int, endpoint: str,
                     run_dir: str, python: str = "python") -> list[str]:
    """torch's own launcher for one host's stage processes.

    One host uses the c10d rendezvous on its endpoint; several use the static one.
    """
    backend = "c10d" if nnodes == 1 else "static"
    command = [python, "-m", "torch.distributed.run", "--nnodes", str(nnodes)]
    if nnodes > 1:
        command += ["--node-rank", str(node_rank)]
    return command + ["--nproc-per-node", str(nproc_per_node), "--rdzv-backend", backend,
                      "--rdzv-endpoint", endpoint, "--max-restarts", "0", "-m", WORKER_MODULE, run_dir]


def torchrun_commands(stages: int, nnodes: int, endpoint: str, run_dir: str,
                      python: str = "python") -> list[NodeCommand]:
    """One torchrun command per host, the plan's stages split evenly in order.

    Raises:
        InputError: no stages, nnodes below 1, stages not a multiple of nnodes, or no endpoint.
    """
    if stages < 1:
        raise InputError("the plan has no stages to launch")
    if nnodes < 1 or stages % nnodes:
        raise InputError(f"{stages} stages do not split evenly over {nnodes} hosts: "
                         f"choose {', '.join(str(n) for n in divisors(stages))} hosts")
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"rendezvous endpoint '{endpoint}' must be HOST:PORT (the address of host 0)")
    per_node = stages // nnodes
    return [NodeCommand(rank, tuple(range(rank * per_node, (rank + 1) * per_node)),
                        shlex.join(torchrun_command(nnodes, rank, per_node, endpoint, run_dir, python)))
            for rank in range(nnodes)]


def divisors(count: int) -> list[int]:
    """The host counts that split `count` stages evenly."""
    return [n for n in range(1, count + 1) if count % n == 0]


def device_map_json(device_map: dict[str, Any]) -> str:
    """An accelerate device_map as readable JSON (from core.planning.accelerate_baseline)."""
    return json.dumps(device_map, indent=2) + "\n"

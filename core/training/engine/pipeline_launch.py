"""The pipeline engine's launcher: torch's own torchrun, one process per stage.

One host:   python -m core.training.engine.loopback_run --nnodes 1 --nproc-per-node d*S
                --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:PORT --local-addr 127.0.0.1
                --max-restarts 0 -m core.training.engine.pipeline_worker RUN_DIR
            (torchrun with every listening socket on 127.0.0.1, and GLOO_SOCKET_IFNAME=lo)
Many hosts: torch.distributed.run with --nnodes N --node-rank R, the static rendezvous
            on HOST:PORT, on each host. The command line is core.system.torchrun's,
            the one the app exports (core.planning.export), which says why static.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO

from core import REPO_ROOT
from core.system.process import die_with_parent
from core.system.torchrun import torchrun_command as torchrun
from core.training.config import TrainConfig
from core.training.engine.context import RunContext

THREADS_ENV = "ALLOT_THREADS"  # torch threads per worker process


def free_port() -> int:
    """A TCP port that was free a moment ago on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def processes_on_this_node(config: TrainConfig, processes: int) -> int:
    """How many of the run's d x S stage processes this host runs."""
    if config.nnodes == 1:
        return processes
    if config.nproc_per_node is not None:
        return config.nproc_per_node
    return processes // config.nnodes


def torchrun_command(run_dir: Path, config: TrainConfig, processes: int, endpoint: str) -> list[str]:
    """The torchrun command line (core.system.torchrun) that starts this host's share of the
    `processes`; one machine keeps every socket on loopback (see loopback_run)."""
    return torchrun(config.nnodes, config.node_rank, processes_on_this_node(config, processes), endpoint, run_dir,
                    python=sys.executable, loopback=config.nnodes == 1)


def node_commands(run_dir: Path, config: TrainConfig, processes: int) -> list[str]:
    """What a user runs on each host of a multi-host launch (printed for them)."""
    from dataclasses import replace

    endpoint = config.rdzv_endpoint or "HOST0:29500"
    return [shlex.join(torchrun_command(run_dir, replace(config, node_rank=rank), processes, endpoint))
            for rank in range(config.nnodes)]


def threads_per_process(processes: int) -> int:
    """Share this host's cores between its stage processes."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, processes))


def launch_workers(context: RunContext, log: IO[bytes] | None) -> subprocess.Popen[bytes]:
    """Start torchrun for this host's stages; it dies with its parent (Linux)."""
    config = context.config
    endpoint = config.rdzv_endpoint or f"127.0.0.1:{free_port()}"
    command = torchrun_command(context.paths.root, config, context.num_processes, endpoint)
    processes = processes_on_this_node(config, context.num_processes)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env[THREADS_ENV] = str(threads_per_process(processes))
    env["OMP_NUM_THREADS"] = env[THREADS_ENV]
    if config.nnodes == 1:
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's pair sockets on loopback, not the host's address
    print("launch: " + shlex.join(command), flush=True)
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT if log is not None else None,
                            preexec_fn=die_with_parent if sys.platform == "linux" else None)  # torchrun goes with the job

"""torch's own launcher (torchrun) as one command line: what the pipeline engine starts
(core.training.engine.pipeline_launch) and what the app exports (core.planning.export).

    torchrun_command(nnodes=2, node_rank=1, nproc_per_node=4, endpoint="node0:29500", run_dir="runs/x")
    -> python -m torch.distributed.run --nnodes 2 --node-rank 1 --nproc-per-node 4
       --rdzv-backend static --rdzv-endpoint node0:29500 --max-restarts 0
       -m core.training.engine.pipeline_worker runs/x

One host rendezvous with c10d on its endpoint. Several use the static
rendezvous: c10d ignores --node-rank and orders hosts by arrival, while each
host's run directory holds the checkpoints of its own stages, so host R must
always get the same stages. `loopback` (the engine's one-host runs) starts
torchrun through core.training.engine.loopback_run with every socket on
127.0.0.1; multi-host runs must listen where the other hosts reach them.
Torch-free: only strings.
"""

from __future__ import annotations

from pathlib import Path

TORCHRUN = "torch.distributed.run"
LOOPBACK_LAUNCHER = "core.training.engine.loopback_run"  # torchrun with its stores on 127.0.0.1
WORKER_MODULE = "core.training.engine.pipeline_worker"  # the stage process torchrun starts
LOOPBACK = "127.0.0.1"


def torchrun_command(nnodes: int, node_rank: int, nproc_per_node: int, endpoint: str, run_dir: Path | str,
                     python: str = "python", loopback: bool = False) -> list[str]:
    """The torchrun command line that starts one host's `nproc_per_node` stage processes.

    Raises:
        ValueError: loopback asked for a multi-host run.
    """
    if loopback and nnodes != 1:
        raise ValueError("a loopback torchrun is for one host only")
    command = [python, "-m", LOOPBACK_LAUNCHER if loopback else TORCHRUN, "--nnodes", str(nnodes)]
    if nnodes > 1:
        command += ["--node-rank", str(node_rank)]
    command += ["--nproc-per-node", str(nproc_per_node), "--rdzv-backend", "c10d" if nnodes == 1 else "static",
                "--rdzv-endpoint", endpoint]
    if loopback:
        command += ["--local-addr", LOOPBACK]  # the agent tells its workers to connect there
    return command + ["--max-restarts", "0", "-m", WORKER_MODULE, str(run_dir)]

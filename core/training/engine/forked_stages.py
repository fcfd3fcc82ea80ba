"""A one-host run's stage processes forked from one fork server, not started as new interpreters
(core.training.engine.loopback_run runs torchrun through here).

torchrun starts each stage of `-m core.training.engine.pipeline_worker RUN_DIR` as a new Python
that imports torch and torch.distributed.pipelining: about 2 s of CPU a process, all of them at
once on the same cores. Here torch's elastic agent (torchrun's own, from the same arguments)
starts the stages with multiprocessing's fork server instead: one fresh process imports the
worker once (core.training.engine.stage_server), while torchrun imports torch beside it, and
each stage is a fork of it, ready in milliseconds. The server is a clean process (no threads,
no stores, CUDA untouched), so its forks are safe on GPU hosts too. It dies with torchrun, and
its stages with it (exit_with_parent), as they die with torchrun when it starts them. Each stage
runs pipeline_worker.main with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...), as a
started one does.
"""

from __future__ import annotations

import os
import sys

from core.system.torchrun import WORKER_MODULE

SERVER_PRELOAD = "core.training.engine.stage_server"  # what the fork server imports before it forks


def forks_stages(argv: list[str]) -> bool:
    """Whether torchrun with `argv` forks its stages here: the stage worker (`-m
    core.training.engine.pipeline_worker`) on Linux; anything else runs as torchrun runs it."""
    return sys.platform == "linux" and any(argv[i:i + 2] == ["-m", WORKER_MODULE] for i in range(len(argv)))


def server_preload(run_dir: str) -> list[str]:
    """The worker; and transformers' model code (about 1.4 s of CPU) when the run trains a
    Hugging Face model."""
    from core.training.engine.context import RunContext

    try:
        hf = RunContext.load(run_dir).hf is not None
    except Exception:  # the stages report an unreadable run themselves
        hf = False
    return [SERVER_PRELOAD, *(["transformers.modeling_utils"] if hf else [])]


def start_server(argv: list[str]) -> None:
    """Start the fork server now, so that it imports the worker while torchrun imports torch."""
    import multiprocessing
    import multiprocessing.forkserver

    os.environ.setdefault("PYTHONUNBUFFERED", "1")  # the server and its forks: torchrun's `python -u`
    multiprocessing.set_forkserver_preload(server_preload(argv[-1]))  # torchrun's last: the run directory
    multiprocessing.forkserver.ensure_running()


def run_stage(run_dir: str) -> int:
    """One stage process: the worker's entry point (already imported, in the fork server)."""
    from core.training.engine.pipeline_worker import main

    return main([run_dir])


def torchrun_forked(argv: list[str]) -> None:
    """torchrun with `argv`, its stages forked from the fork server where forks_stages(argv)."""
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, parse_args, run

    args = parse_args(argv)
    if not forks_stages(argv):
        run(args)
        return
    start_server(argv)  # running already when loopback_run started it
    if args.master_port is None:
        args.master_port = 29500  # as torchrun's run() sets it (read by the static rendezvous only)
    config, _, _ = config_from_args(args)
    config.start_method = "forkserver"
    elastic_launch(config=config, entrypoint=run_stage)(*args.training_script_args)

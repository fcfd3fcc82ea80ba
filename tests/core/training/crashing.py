"""A job (or pipeline worker) that raises at a chosen step: how the tests check crash handling.

    python -m tests.core.training.crashing job STEP RUN_DIR
    python -m tests.core.training.crashing worker STEP RUN_DIR   (torchrun starts these)

The failure is injected by patching the training loop's learning-rate call in this
process, so the production loop has no switch for it. In `job` mode the pipeline's
torchrun command is patched too, so its workers are started through this module.
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.training.config import TrainConfig
from core.training.engine import loop
from core.training.engine import pipeline_launch as pipeline

MODULE = "tests.core.training.crashing"  # how torchrun starts it (__name__ is __main__ there)


def fail_at(step: int) -> None:
    """Make the training loop raise when it reaches `step` (in this process)."""
    learning_rate_at = loop.learning_rate_at

    def failing(at: int, config: TrainConfig) -> float:
        if at == step:
            raise RuntimeError(f"failing at step {at} as the test asks")
        return learning_rate_at(at, config)

    loop.learning_rate_at = failing


def workers_fail_at(step: int) -> None:
    """Start the pipeline's workers through this module, failing at `step`."""
    torchrun_command = pipeline.torchrun_command

    def crashing_workers(run_dir: Path, config: TrainConfig, processes: int, endpoint: str) -> list[str]:
        command = torchrun_command(run_dir, config, processes, endpoint)
        at = command.index("core.training.engine.pipeline_worker")
        return command[:at] + [MODULE, "worker", str(step)] + command[at + 1:]

    pipeline.torchrun_command = crashing_workers


def main(argv: list[str]) -> int:
    mode, step, rest = argv[0], int(argv[1]), argv[2:]
    fail_at(step)
    if mode == "worker":
        from core.training.engine import pipeline_worker

        return pipeline_worker.main(rest)
    workers_fail_at(step)
    from core.training import job

    return job.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

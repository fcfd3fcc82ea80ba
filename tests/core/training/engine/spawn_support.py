"""What the engine tests that spawn gloo process groups by hand share: a free loopback port, the
tiny GPT's token batch (inputs and next-token targets, drawn from a seed), and ranks forked from
one fork server that imported torch and the engine once for the whole test session."""

from __future__ import annotations

import multiprocessing
import socket
from collections.abc import Callable
from typing import Any

import torch

# What the fork server imports before its first fork: torch with the pipeline stack, the engine,
# transformers' llama (the HF tests' model) and the test modules whose functions the ranks run.
# A spawned rank imported all of this itself (3-5 s of CPU each); a forked one starts at once.
PRELOAD = ["core.training.engine.pipeline_worker", "core.training.engine.hf_tensor_parallel",
           "transformers.models.llama.modeling_llama", "tests.core.training.engine.hf_support",
           "tests.core.training.engine.test_tensor_parallel", "tests.core.training.engine.test_hf_tensor_parallel",
           "tests.core.training.engine.test_chunked_pipeline"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_ranks(worker: Callable[..., None], args: tuple[Any, ...], ranks: int) -> None:
    """worker(rank, *args) in `ranks` processes, until all end (one failing fails the call).

    They fork from multiprocessing's fork server, a fresh process (no threads, no CUDA) started
    on first use with PRELOAD imported, as the engine forks its stages (core.training.engine.forked_stages).
    The server keeps its start's environment and working directory: pass the ranks what they need.
    """
    import torch.multiprocessing as mp

    multiprocessing.set_forkserver_preload(PRELOAD)
    mp.start_processes(worker, args=args, nprocs=ranks, start_method="forkserver")


def token_batch(vocab_size: int, seq_len: int, micro_batches: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`micro_batches` rows of `seq_len` token ids and the targets shifted by one."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab_size, (micro_batches, seq_len + 1), generator=generator)
    return tokens[:, :-1], tokens[:, 1:]

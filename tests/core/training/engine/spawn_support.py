"""What the engine tests that spawn gloo process groups by hand share: a free loopback port and the
tiny GPT's token batch (inputs and next-token targets, drawn from a seed)."""

from __future__ import annotations

import socket

import torch


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def token_batch(vocab_size: int, seq_len: int, micro_batches: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`micro_batches` rows of `seq_len` token ids and the targets shifted by one."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab_size, (micro_batches, seq_len + 1), generator=generator)
    return tokens[:, :-1], tokens[:, 1:]

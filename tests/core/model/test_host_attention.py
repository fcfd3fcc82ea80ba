"""Attention with dropout measured as the host CPU runs it: SDPA's math kernel, whose saved
probabilities and mask the flash measurement leaves out (docs/design.md, "The complete memory model")."""

import contextlib

import pytest
import torch
import torch.nn.functional as F

from core.model.autocast_meta import AutocastOnMeta
from core.model.meta_attention import flash_attention_on_meta

SHAPE = (2, 4, 64, 16)  # batch, heads, tokens, head width


def saved_bytes(device: str, dropout: float, mode: contextlib.AbstractContextManager[object]) -> int:
    """Bytes of the storages SDPA saves for backward (inputs included, each storage once)."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[id(storage) if device == "meta" else storage._cdata] = storage.nbytes()
        return tensor

    q, k, v = (torch.randn(SHAPE, device=device, requires_grad=True) for _ in range(3))
    with mode, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
    return sum(seen.values())


@pytest.mark.parametrize("bf16", [False, True])
def test_with_dropout_the_host_measurement_saves_what_the_cpu_saves(bf16: bool) -> None:
    real_mode = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    meta_mode = AutocastOnMeta() if bf16 else contextlib.nullcontext()
    real = saved_bytes("cpu", 0.1, real_mode)
    with flash_attention_on_meta(host_kernels=True):
        host = saved_bytes("meta", 0.1, meta_mode)
    with flash_attention_on_meta():
        flash = saved_bytes("meta", 0.1, meta_mode)
    assert host == real
    # the math kernel keeps the T x T probabilities, the dropped-out ones and the mask besides q, k, v, out
    tokens_squared = SHAPE[0] * SHAPE[1] * SHAPE[2] ** 2
    assert host - flash >= tokens_squared * (2 * (2 if bf16 else 4) + 1) - 4 * SHAPE[0] * SHAPE[1] * SHAPE[2]


def test_without_dropout_the_host_measurement_is_flash() -> None:
    with flash_attention_on_meta(host_kernels=True):
        host = saved_bytes("meta", 0.0, contextlib.nullcontext())
    with flash_attention_on_meta():
        flash = saved_bytes("meta", 0.0, contextlib.nullcontext())
    assert host == flash

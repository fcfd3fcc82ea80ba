"""Attention on the meta device, as the kernel that runs it saves (docs/design.md, "The complete memory model").

Attention is measured as flash attention (what GPUs run): q, k, v, output and
log-sum-exp are kept, not the seq x seq score matrix of the math fallback. A
model planned on the host CPU alone (`host_kernels`) is measured with the
kernel the CPU runs: with attention dropout above 0 in training that is the
math fallback (torch's CPU flash kernel takes no dropout), which keeps the
seq x seq probabilities and the dropout mask.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from core.model.autocast_meta import lower_precision_dtype


class _GroupedFlash(torch.autograd.Function):
    """Flash attention over fewer key/value heads than query heads (grouped-query attention), as the
    kernels keep it: q, k, v (k and v not repeated), the output and the log-sum-exp saved for backward.
    The meta flash function takes equal head counts, so the forward repeats k and v for it only."""

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, causal: bool,
                scale: float | None) -> torch.Tensor:
        repeat = query.shape[-3] // key.shape[-3]
        wide_key, wide_value = (t.repeat_interleave(repeat, dim=-3) for t in (key, value))
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(query, wide_key, wide_value, 0.0, causal,
                                                                       scale=scale)[:2]
        ctx.save_for_backward(query, key, value, out, lse)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        query, key, value, _, _ = ctx.saved_tensors
        return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value), None, None


@contextlib.contextmanager
def flash_attention_on_meta(host_kernels: bool = False) -> Iterator[None]:
    """Route scaled_dot_product_attention to the flash kernel's meta function; with `host_kernels`,
    attention with dropout to the math kernel the CPU runs it with (it saves what the CPU saves)."""
    original = torch.nn.functional.scaled_dot_product_attention

    def flash(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
              dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
              enable_gqa: bool = False) -> torch.Tensor:
        if query.device.type != "meta":
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                            is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
        causal = is_causal or attn_mask is not None  # LM masks are causal
        if host_kernels and dropout_p > 0:
            return _math_attention(query, key, value, dropout_p, causal, scale)
        width = value.shape[-1]
        if width != query.shape[-1]:  # MLA's value heads are narrower than its query heads: the kernel pads them
            scale = query.shape[-1] ** -0.5 if scale is None else scale
            pad = max(width, query.shape[-1])
            query, key, value = (F.pad(t, (0, pad - t.shape[-1])) for t in (query, key, value))
        if key.shape[-3] != query.shape[-3]:  # grouped-query attention: k and v kept with their own heads
            dtype = lower_precision_dtype()  # autocast casts SDPA's inputs (emulated: core.model.autocast_meta)
            if dtype is not None:
                query, key, value = (t.to(dtype) for t in (query, key, value))
            return _GroupedFlash.apply(query, key, value, causal, scale)[..., :width]
        out = torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, 0.0, causal, scale=scale)[0]
        return out[..., :width]

    torch.nn.functional.scaled_dot_product_attention = flash
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention = original


def _math_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, dropout_p: float, causal: bool,
                    scale: float | None) -> torch.Tensor:
    """SDPA's math kernel (the CPU's only one with dropout), in autocast's dtype where one is in force."""
    dtype = lower_precision_dtype()
    if dtype is not None:
        query, key, value = (t.to(dtype) for t in (query, key, value))
    return torch.ops.aten._scaled_dot_product_attention_math(
        query, key, value, None, dropout_p, causal, scale=scale, enable_gqa=key.shape[-3] != query.shape[-3])[0]

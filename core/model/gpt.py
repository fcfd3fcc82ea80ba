"""The built-in decoder-only GPT, in plain PyTorch (after nanoGPT).

The same code is planned (built on the meta device) and trained. Its top
level is a chain of layers whose module names are the planner's layer names:
`embed`, `h.0` ... `h.{L-1}`, `ln_f`, `lm_head`, so a plan maps straight onto
modules, and a pipeline stage is a slice of `GPT.layers()`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.model.config import GPTConfig


class Embeddings(nn.Module):
    """Token plus learned position embeddings."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.wpe = nn.Embedding(config.seq_len, config.d_model)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        return self.drop(self.wte(idx) + self.wpe(positions))


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.c_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.dropout = config.dropout
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # widths from the projection, not the model: under tensor parallelism a process holds
        # n_head / t of the heads (core.training.engine.tensor_parallel)
        batch, seq, width = x.shape
        q, k, v = self.c_attn(x).chunk(3, dim=2)
        head_width = width // self.n_head
        q, k, v = (t.view(batch, seq, -1, head_width).transpose(1, 2) for t in (q, k, v))
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(batch, seq, -1)
        return self.resid_drop(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.d_model, 4 * config.d_model, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.d_model, config.d_model, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.embed = Embeddings(config)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model, bias=config.bias)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.wte.weight
        self.apply(_init_weights)
        for name, parameter in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2's scaled init of residual projections
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def layers(self) -> list[tuple[str, nn.Module]]:
        """The chain of layers in execution order, named as the planner names them."""
        return [("embed", self.embed), *((f"h.{i}", b) for i, b in enumerate(self.h)),
                ("ln_f", self.ln_f), ("lm_head", self.lm_head)]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits, or the mean cross-entropy loss when targets are given."""
        x = idx
        for _, layer in self.layers():
            x = layer(x)
        if targets is None:
            return x
        return lm_loss(x, targets)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy, in fp32 or wider whatever the compute dtype."""
    return F.cross_entropy(at_least_fp32(logits).view(-1, logits.shape[-1]), targets.reshape(-1))


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """bf16 and fp16 widened to fp32; fp32 and float64 (a test's) as they are."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)

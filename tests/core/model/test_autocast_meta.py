"""bf16 autocast emulated on meta tensors saves what torch's CPU autocast saves (docs/design.md,
"The complete memory model")."""

import torch

from core.model.autocast_meta import AutocastOnMeta
from core.model.config import GPTConfig
from core.model.gpt import GPT
from core.model.meta_attention import flash_attention_on_meta

CONFIG = GPTConfig(n_layer=2, n_head=2, d_model=64, vocab_size=100, seq_len=32)


def saved_bytes(device: str, mode: object) -> tuple[int, torch.dtype]:
    """Bytes of the storages the model's forward saves for backward (parameters excluded), and the logits' dtype."""
    with torch.device(device):
        model = GPT(CONFIG)
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in params:
            seen[storage._cdata] = storage.nbytes()
        return tensor

    ids = torch.zeros((2, 32), dtype=torch.long, device=device)
    with mode, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):  # type: ignore[attr-defined]
        logits = model(ids)
    return sum(seen.values()), logits.dtype


def test_meta_emulation_saves_what_cpu_autocast_saves():
    real, real_dtype = saved_bytes("cpu", torch.autocast("cpu", dtype=torch.bfloat16))
    with flash_attention_on_meta():
        emulated, emulated_dtype = saved_bytes("meta", AutocastOnMeta())
    assert emulated_dtype == real_dtype == torch.bfloat16
    # measured: 533,296 against 533,248 bytes (the attention's log-sum-exp is laid out apart on meta)
    assert abs(emulated - real) <= 0.001 * real


def test_a_weight_used_twice_is_cast_once():
    weight = torch.nn.Parameter(torch.zeros(8, 8, device="meta"))
    x = torch.zeros(2, 8, device="meta")
    casts = AutocastOnMeta()
    with casts:
        a = torch.nn.functional.linear(x, weight)
        b = torch.nn.functional.linear(x, weight)
    assert a.dtype == b.dtype == torch.bfloat16
    assert len(casts._casts) == 1

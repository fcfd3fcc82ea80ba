"""Hugging Face causal LMs on the meta device: no weights, no download.

transformers is an optional dependency (the `hf` extra): it is imported here
only, when an HF config is planned.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.errors import InputError


def build_hf_model_on_meta(config_dict: dict[str, Any], dtype: torch.dtype) -> nn.Module:
    """Instantiate AutoModelForCausalLM from a config dict on the meta device.

    Raises:
        InputError: transformers is missing, or the config is not a causal LM it knows.
    """
    try:
        import transformers
    except ImportError:
        raise InputError("HF configs need transformers: python3 -m pip install -e '.[hf]'") from None
    config_dict = dict(config_dict)
    model_type = config_dict.pop("model_type")
    with _quiet_transformers():
        if model_type not in transformers.CONFIG_MAPPING:
            raise InputError(f"transformers {transformers.__version__} does not know model_type '{model_type}'")
        try:
            config = transformers.AutoConfig.for_model(model_type, **config_dict)
        except Exception as error:  # its validators raise their own types: the user's config is at fault
            raise InputError(f"transformers rejects this '{model_type}' config: {first_line(error)}") from None
        _check_causal(config, model_type)
        model = _build_on_meta(transformers, config, model_type)
    # built in fp32, then its fp32 tensors only: a buffer the model makes in its own dtype stays
    # so, as from_pretrained leaves it (RecurrentGemma scales its embedding by a bfloat16 sqrt(hidden));
    # and all on meta: a parameter made by a factory the device context misses (DiffLlama's
    # torch.normal lambdas) would be a real CPU tensor among meta ones
    return model._apply(lambda tensor: tensor.to(device="meta", dtype=dtype if tensor.dtype == torch.float32
                                                 else tensor.dtype))


def _build_on_meta(transformers: Any, config: Any, model_type: str) -> nn.Module:
    """SDPA attention where the model supports it, else eager (logged once per type):
    planning and training build the same model through here."""
    for implementation in ATTENTION_IMPLEMENTATIONS:
        config._attn_implementation = implementation
        try:
            with torch.device("meta"):
                model: nn.Module = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        except ValueError as error:
            if implementation == "sdpa" and "scaled_dot_product_attention" in str(error):
                _log_eager_once(model_type)
                continue
            raise InputError(f"'{model_type}' is not a causal language model: {first_line(error)}") from None
        return model
    raise AssertionError("eager attention is always supported")


ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")
_EAGER_LOGGED: set[str] = set()


def _log_eager_once(model_type: str) -> None:
    if model_type not in _EAGER_LOGGED:
        _EAGER_LOGGED.add(model_type)
        logging.getLogger("allot").warning(
            "'%s' has no SDPA attention in transformers: it runs eager attention (planned and trained so)",
            model_type)


def first_line(error: BaseException) -> str:
    """The most specific one-line reason: the cause where an error wraps one."""
    cause = error.__cause__ or error
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return lines[0] if lines else type(cause).__name__


def _check_causal(config: Any, model_type: str) -> None:
    """Encoders (BERT, RoBERTa, ...) have a causal-LM class only as a decoder
    (is_decoder true); planned as they are, they are not causal LMs."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        architectures = ", ".join(getattr(config, "architectures", None) or [])
        shown = f"architectures {architectures}" if architectures else "'is_decoder' is not true"
        raise InputError(f"'{model_type}' is an encoder model ({shown}): only causal (decoder-only) "
                         "language models are supported")


def forward_hf(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Logits of an HF causal LM (no cache: training-shaped forward).

    On meta tensors transformers' mask helpers must take their tracing path:
    their eager path reads tensor values (packed-sequence and all-ones checks).
    That path builds a causal mask where a real run without padding has none,
    and with a mask transformers repeats grouped-query attention's key and
    value heads before SDPA; without one (the real run, on CPU and CUDA) SDPA
    takes them as they are (`enable_gqa`), so the measurement does too.
    """
    from transformers import masking_utils
    from transformers.integrations import sdpa_attention

    original, original_gqa = masking_utils.is_tracing, sdpa_attention.use_gqa_in_sdpa
    masking_utils.is_tracing = lambda *args, **kwargs: True
    sdpa_attention.use_gqa_in_sdpa = lambda attention_mask, key, value: key.shape[-1] == value.shape[-1] <= 256
    try:
        return model(input_ids=ids, use_cache=False).logits
    finally:
        masking_utils.is_tracing, sdpa_attention.use_gqa_in_sdpa = original, original_gqa


@contextlib.contextmanager
def balanced_experts(model: nn.Module) -> Iterator[None]:
    """Measure mixture-of-experts layers with balanced routing.

    HF's expert loops index tokens by data-dependent masks, which the meta
    device cannot run. During measurement every token instead goes through
    top-k experts' worth of the same MLP: the FLOPs and saved bytes of a
    perfectly balanced router. Families that route through loops of their own
    (DBRX, JetMoE) take theirs from core.model.hf_meta_routing.
    """
    from core.model.hf_meta_routing import balanced_meta_forward

    patched = []
    for module in model.modules():
        forward = _balanced_forward.__get__(module) if _is_expert_bank(module) else balanced_meta_forward(module)
        if forward is not None:
            module.forward = forward
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


def _is_expert_bank(module: nn.Module) -> bool:
    """transformers' expert banks: 3-D `gate_up_proj` (or `up_proj` without a gate) and
    `down_proj`, called with the router's top-k indices and weights."""
    import inspect

    up = getattr(module, "gate_up_proj", None)
    if up is None and getattr(module, "has_gate", True) is False:
        up = getattr(module, "up_proj", None)
    down = getattr(module, "down_proj", None)
    if not (isinstance(up, nn.Parameter) and isinstance(down, nn.Parameter) and up.dim() == 3):
        return False
    parameters = inspect.signature(type(module).forward).parameters.values()
    return sum(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters) >= 4  # self, hidden states, indices, weights


def _balanced_forward(self: Any, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                      top_k_weights: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Every token through top-k experts' worth of expert 0, with the bank's own layout
    (transposed or not, biases, gate) as transformers' use_experts_implementation flags it."""
    top_k = top_k_index.shape[-1]
    width = hidden_states.shape[-1]
    gated = getattr(self, "has_gate", True)
    biased = getattr(self, "has_bias", False)
    up_name = "gate_up_proj" if gated else "up_proj"
    up_weight = getattr(self, up_name)
    transposed = getattr(self, "is_transposed", up_weight.shape[-1] != width)
    routed = hidden_states.reshape(-1, 1, width).expand(-1, top_k, -1).reshape(-1, width)
    out = _expert_linear(routed, up_weight[0], getattr(self, f"{up_name}_bias")[0] if biased else None, transposed)
    if gated:
        out = self._apply_gate(out) if hasattr(self, "_apply_gate") else _swiglu(self, out)
    else:
        out = self.act_fn(out)
    out = _expert_linear(out, self.down_proj[0], self.down_proj_bias[0] if biased else None, transposed)
    if getattr(self, "has_post_expert_norm", False):
        out = self.post_expert_norm(out)
    out = out.view(-1, top_k, width)
    return (out * top_k_weights.reshape(-1, top_k).unsqueeze(-1).to(out.dtype)).sum(dim=1)


def _expert_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, transposed: bool) -> torch.Tensor:
    out = x @ weight if transposed else F.linear(x, weight)
    return out if bias is None else out + bias


def _swiglu(self: Any, gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return self.act_fn(gate) * up


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)

"""Pipeline stages of any Hugging Face causal LM: one generic split, the model's own forward.

Each stage process builds the whole model on the meta device (no memory) and
keeps only its stage's layers of the chain (core.model.measure.layer_chain, in the order
they run: core.model.hf_anatomy).
Every layer it does not hold is replaced, in place, by a stand-in without
parameters (so parameter names stay the Hugging Face ones,
`model.layers.3.mlp.up_proj.weight`, and stage state dicts merge back into
the model's):

- a layer before the stage that runs before the first block (the embedding,
  GPT-2's position table) gives zeros of its output's shape;
- a block the stage does not hold passes its input through;
- the layer just before the stage's first one gives the tensor the previous
  stage sent (in the form that layer returns: a tensor, or a block's tuple).

A stand-in answers what the model's forward reads off the layer it replaces
(a block's `block_type` or `attention_type`, the embedding's weight's device)
from the original layer, kept on the meta device.

A stage then runs the model's own forward (`XForCausalLM.forward`) on token ids
(zeros of the right shape on a later stage), so everything the model computes
around its blocks comes from transformers' code: position ids, causal and
sliding-window masks, rotary cos/sin, embedding scaling, logit soft-capping and
scaling. A stage without the head stops the forward right after its last layer
and hands on that layer's output. What the split relies on is checked once per
config on the meta device (core.model.hf_anatomy); see docs/design.md
"Hugging Face models". No KV cache is ever made. Known traps:

- non-persistent buffers (rotary `inv_freq`, ...) are computed in `__init__`:
  on the meta device they never are, and `to_empty` leaves garbage, so every
  stage re-initialises them with transformers' own `_init_weights`, which in
  transformers 5 must restore them (it does so after from_pretrained);
- a tied head on another stage than the embedding gets its own copy of the
  weight, initialised or loaded as the embedding is; the engines then sum
  the two gradients (see core.training.engine.stages).

Initial weights from a config are seeded per layer (seed, layer name), so a
layer gets the same weights whichever stage or engine holds it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn

from core.errors import InputError
from core.model.hf_anatomy import (
    BATCH,
    TOKENS,
    ModelAnatomy,
    anatomy_of,
    hidden_input,
    with_hidden_input,
)
from core.model.hf_source import HFModelSource, check_trainable
from core.training.engine.recompute import OFF, checkpointed
from core.training.engine.stages import StageLayout


def build_meta_model(source: HFModelSource) -> Any:
    """The whole model on the meta device, fp32, SDPA attention (eager where unsupported), no cache."""
    from core.model.hf import build_hf_model_on_meta

    check_trainable(source.model_type)
    model: Any = build_hf_model_on_meta(source.config, torch.float32)
    model.config.use_cache = False
    return model


def source_anatomy(source: HFModelSource) -> ModelAnatomy:
    """What the split needs to know about the model (cached per config; raises InputError if it cannot be split)."""
    check_trainable(source.model_type)
    return anatomy_of(source.config_json)


def hf_layer_names(source: HFModelSource) -> list[str]:
    """The model's chain of layers as the planner names them, in the order they run."""
    return list(source_anatomy(source).chain)


class HFStage(nn.Module):
    """Some consecutive layers of an HF causal LM, with HF parameter names.

    `named_parameters()` gives exactly the stage's parameters under the full
    model's names (what an adapter or optimizer over the stage needs).
    """

    def __init__(self, model: Any, anatomy: ModelAnatomy, layers: Sequence[str], received: _Received,
                 recompute: str = OFF, autocast_dtype: torch.dtype | None = None):
        super().__init__()
        self.config = model.config
        self.layer_names = tuple(layers)
        self.tied_names = (anatomy.embed_weight, anatomy.head_weight)
        for name, child in model._modules.items():  # HF's names (model.*, transformer.*, lm_head)
            self.register_module(name, child)
        self.causal_lm: Any
        object.__setattr__(self, "causal_lm", model)  # runs the forward; not registered (its children are ours)
        self._init_weights_fn: Callable[[nn.Module], None] = model._init_weights
        self.takes_ids = anatomy.chain[0] in self.layer_names
        self.has_head = anatomy.chain[-1] in self.layer_names
        self.received = received  # what the stand-ins read while the stage runs (prune_to_stage)
        self.autocast_dtype = autocast_dtype
        if recompute != OFF:  # how its blocks are checkpointed (core.training.engine.recompute)
            for name in self.layer_names:
                if name in anatomy.blocks:
                    block = self.get_submodule(name)
                    block.forward = functools.partial(checkpointed, recompute, block.forward)

    def train(self, mode: bool = True) -> HFStage:
        super().train(mode)
        self.causal_lm.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        autocast: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self.autocast_dtype is not None:
            autocast = torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype)
        ids = x if self.takes_ids else torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
        self.received.tensor = x
        try:
            with autocast:
                return self.causal_lm(input_ids=ids, use_cache=False).logits
        except _StageDone as done:
            return done.hidden
        finally:
            self.received.tensor = None


class _StageDone(Exception):
    """Raised after a stage's last layer: the rest of the model's forward belongs to later stages."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__("stage done")
        self.hidden = hidden


def _stop_after(module: nn.Module, args: Any, output: Any) -> None:
    raise _StageDone(output if isinstance(output, torch.Tensor) else output[0])


def _stop_before(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Ends a stage in front of a layer: what the layer would read is what the stage sends."""
    raise _StageDone(hidden_input(args, kwargs))


def _replace_hidden_states(received: _Received) -> Callable[..., tuple[tuple[Any, ...], dict[str, Any]]]:
    """A layer's pre-hook that gives it what the previous stage sent as its hidden states."""

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
             ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return with_hidden_input(args, kwargs, received.get())

    return hook


class _Received:
    """What the stage received (set by HFStage.forward while it runs): the stand-ins read it."""

    def __init__(self) -> None:
        self.tensor: torch.Tensor | None = None

    def get(self) -> torch.Tensor:
        assert self.tensor is not None, "a stage's input is set by HFStage.forward"
        return self.tensor


class _StandIn(nn.Module):
    """A layer the stage does not hold. The model's forward may read attributes off the
    layer it calls (Nemotron-H's `block_type`, Llama 4's `embed_tokens.weight.device`):
    a plain attribute comes from the original layer (kept on the meta device, not
    registered), a tensor attribute as an empty tensor of its dtype on the stage's device."""

    def __init__(self, original: nn.Module, received: _Received):
        super().__init__()
        self.stand_for: tuple[nn.Module] = (original,)  # a tuple: not registered as a child module
        self.received = received

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if "stand_for" not in self.__dict__:
                raise
        value = getattr(self.__dict__["stand_for"][0], name)
        if isinstance(value, torch.Tensor):
            received = self.__dict__["received"].tensor
            return torch.empty(0, dtype=value.dtype, device=received.device if received is not None else "cpu")
        return value


class _Zeros(_StandIn):
    """Stands for a layer before the stage that runs before the blocks: zeros of its
    output's shape (BATCH and TOKENS from what the stage received)."""

    def __init__(self, original: nn.Module, received: _Received, shape: tuple[int, ...], dtype: torch.dtype):
        super().__init__(original, received)
        self.shape, self.dtype = shape, dtype

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        received = self.received.get()
        sizes = {BATCH: received.shape[0], TOKENS: received.shape[1]}
        return torch.zeros([sizes.get(size, size) for size in self.shape], dtype=self.dtype, device=received.device)


class _Skip(_StandIn):
    """Stands for a layer of another stage that the forward goes through: its input, in its output's form."""

    def __init__(self, original: nn.Module, received: _Received, outputs: int):
        super().__init__(original, received)
        self.outputs = outputs

    def forward(self, hidden: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return _shaped(hidden, self.outputs)


class _Inject(_StandIn):
    """Stands for the layer just before the stage: gives what the previous stage sent."""

    def __init__(self, original: nn.Module, received: _Received, outputs: int):
        super().__init__(original, received)
        self.outputs = outputs

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return _shaped(self.received.get(), self.outputs)


def _shaped(hidden: torch.Tensor, outputs: int) -> Any:
    return hidden if outputs == 0 else (hidden, *([None] * (outputs - 1)))


# ---------------------------------------------------------------- building
def prune_to_stage(model: nn.Module, anatomy: ModelAnatomy, layers: Sequence[str], received: _Received) -> None:
    """Replace every layer of the chain not in `layers` by its stand-in (on meta), which
    reads what the stage received from `received`."""
    owned = set(layers)
    unknown = owned - set(anatomy.chain)
    if unknown:
        raise InputError(f"the plan names layers the model does not have: {', '.join(sorted(unknown))}")
    first = min(anatomy.chain.index(name) for name in owned)
    last = max(anatomy.chain.index(name) for name in owned)
    # In front of a layer whose input the model computes from several earlier outputs (GPT-2's first
    # block reads the sum of two tables), a boundary carries that input: the stage that ends there
    # sends it, the stage that starts there takes it in place of what the model computed.
    starts_at_input = anatomy.reads_computed_input(anatomy.chain[first])
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    for position, name in enumerate(anatomy.chain):
        if name in owned:
            continue
        original = model.get_submodule(name)
        outputs = anatomy.block_outputs if name in anatomy.blocks else 0
        stand_in: nn.Module
        if position == first - 1 and not starts_at_input:
            stand_in = _Inject(original, received, outputs)
        elif position < first and (shape := anatomy.zero_shape(name)) is not None:
            stand_in = _Zeros(original, received, shape, dtype)
        else:
            stand_in = _Skip(original, received, outputs)
        parent_name, _, child = name.rpartition(".")
        parent: Any = model.get_submodule(parent_name) if parent_name else model
        if child.isdigit():
            parent[int(child)] = stand_in
        else:
            setattr(parent, child, stand_in)
    if starts_at_input:
        model.get_submodule(anatomy.chain[first]).register_forward_pre_hook(_replace_hidden_states(received),
                                                                            with_kwargs=True)
    if last < len(anatomy.chain) - 1:
        after = anatomy.chain[last + 1]
        if anatomy.reads_computed_input(after):
            model.get_submodule(after).register_forward_pre_hook(_stop_before, with_kwargs=True)
        else:
            model.get_submodule(anatomy.chain[last]).register_forward_hook(_stop_after)


def untie_head(model: nn.Module, anatomy: ModelAnatomy, layers: Sequence[str]) -> None:
    """A stage with the head but not the embedding gets its own (meta) copy of the tied weight."""
    if anatomy.tied and anatomy.head in layers and anatomy.embed not in layers:
        head: Any = _owner(model, anatomy.head_weight)
        head.weight = nn.Parameter(torch.empty_like(head.weight, device="meta"))


def _owner(model: nn.Module, weight: str) -> Any:
    """The module whose `weight` a parameter name (`model.embed_tokens.weight`) names."""
    return model.get_submodule(weight.rpartition(".")[0])


def build_hf_stage(source: HFModelSource, layout: StageLayout, device: torch.device, seed: int,
                   recompute: str = OFF, autocast_dtype: torch.dtype | None = None,
                   untie: bool = True) -> HFStage:
    """One stage on `device`: meta model, pruned, materialised, initialised or loaded."""
    anatomy = source_anatomy(source)
    model = build_meta_model(source)
    embedding = model.get_submodule(anatomy.embed)  # kept (on meta) as the template of a tied copy
    if untie:
        untie_head(model, anatomy, layout.layers)
    received = _Received()
    prune_to_stage(model, anatomy, layout.layers, received)
    stage = HFStage(model, anatomy, layout.layers, received, recompute, autocast_dtype)
    aliases = _aliases(stage)
    stage.to_empty(device=device)
    _tie_again(stage, aliases)
    _init_non_persistent_buffers(stage)
    if source.weights_dir is None:
        _init_seeded(stage, anatomy, layout.layers, seed, embedding)
    else:
        _load_weights(stage, source, anatomy)
    return stage


def _aliases(stage: nn.Module) -> list[tuple[str, ...]]:
    """The names of each parameter the stage holds under more than one (a tied embedding and
    head on one stage, BertGeneration's head bias and its decoder's), first name first."""
    names: dict[int, list[str]] = {}
    for name, parameter in stage.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), []).append(name)
    return [tuple(group) for group in names.values() if len(group) > 1]


def _tie_again(stage: nn.Module, aliases: list[tuple[str, ...]]) -> None:
    """to_empty makes a new parameter per name, which unties them: tie them again."""
    for first, *others in aliases:
        parameter = stage.get_parameter(first)
        for name in others:
            module_name, _, attribute = name.rpartition(".")
            setattr(stage.get_submodule(module_name), attribute, parameter)


def _load_weights(stage: HFStage, source: HFModelSource, anatomy: ModelAnatomy) -> None:
    """The stage's own tensors, read one at a time; a checkpoint stored under other names
    than the model's (transformers 5 converts them on load: fused experts, legacy names)
    goes through transformers' loader instead, the whole model once on the CPU."""
    from pathlib import Path

    from core.model.hf_weights import load_stage_tensors, missing_tensors, tensor_index

    assert source.weights_dir is not None
    missing = missing_tensors(stage.state_dict(), tensor_index(Path(source.weights_dir)), anatomy.tied_names)
    if not missing or not converts_on_load(source):
        load_stage_tensors(stage, source.weights_dir, anatomy.tied_names)  # InputError names a missing tensor
        return
    logging.getLogger("allot").warning("%s stores its weights under other names than the model's: each stage "
                                       "loads them through transformers' converting loader", source.weights_dir)
    state = converted_state(source, anatomy)
    with torch.no_grad():
        for name, target in stage.state_dict(keep_vars=True).items():
            target.copy_(state[name] if name in state else state[anatomy.tied_names[0]])  # type: ignore[index]


def converts_on_load(source: HFModelSource) -> bool:
    """Whether transformers renames or converts this model's checkpoint tensors on load
    (its model type's conversion mapping, or legacy names of the model's classes)."""
    from transformers.conversion_mapping import get_model_conversion_mapping

    return bool(get_model_conversion_mapping(build_meta_model(source)))


def converted_state(source: HFModelSource, anatomy: ModelAnatomy) -> dict[str, torch.Tensor]:
    """The whole model's state under its own names, loaded by transformers (raises InputError for missing tensors)."""
    from transformers import AutoModelForCausalLM

    from core.model.hf import _quiet_transformers

    loader: Any = AutoModelForCausalLM.from_pretrained
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # its per-tensor bar would fill the run's log
    with _quiet_transformers():
        model, info = loader(str(source.weights_dir), dtype=torch.float32, attn_implementation=anatomy.attention,
                             output_loading_info=True)
    missing = [name for name in info["missing_keys"] if name != (anatomy.tied_names or ("", ""))[1]]
    if missing:
        raise InputError(f"the weights in {source.weights_dir} have no tensor {missing[0]}")
    return dict(model.state_dict())


def layer_seed(seed: int, layer: str) -> int:
    """The init seed of one layer: the same on whichever stage holds it."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{layer}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


@torch.no_grad()
def _init_seeded(stage: HFStage, anatomy: ModelAnatomy, layers: Sequence[str], seed: int,
                 embedding: nn.Module) -> None:
    """HF's own init of every owned layer, under that layer's seed (children
    before parents, as transformers' initialize_weights goes)."""
    tied_head = _owner(stage, anatomy.head_weight) if anatomy.tied and anatomy.head in layers else None
    for name in layers:
        _init_layer(stage, stage.get_submodule(name), layer_seed(seed, name), skip=tied_head)
    if tied_head is not None and anatomy.embed not in layers:  # else it is the embedding's weight
        _init_tied_copy(stage, anatomy, seed, embedding)


def _init_layer(stage: HFStage, layer: nn.Module, seed: int, skip: nn.Module | None = None) -> None:
    """HF's init of a layer's modules, children first, under the layer's seed (`skip`: a tied
    head, whose weight is the embedding's or a copy initialised as it)."""
    torch.manual_seed(seed)
    for sub in reversed(list(layer.modules())):
        if sub is not skip:
            stage._init_weights_fn(sub)


def _init_tied_copy(stage: HFStage, anatomy: ModelAnatomy, seed: int, template: nn.Module) -> None:
    """The head's copy of a tied weight starts as the embedding (on its stage) does."""
    head: Any = _owner(stage, anatomy.head_weight)
    layer = template.to_empty(device=head.weight.device)  # the meta embedding layer this stage dropped
    _init_layer(stage, layer, layer_seed(seed, anatomy.embed))
    head.weight.copy_(_owner(layer, anatomy.embed_weight.removeprefix(f"{anatomy.embed}.")).weight)


@torch.no_grad()
def _init_non_persistent_buffers(stage: HFStage) -> None:
    """Recompute buffers that no checkpoint holds (garbage after to_empty): rotary
    `inv_freq` and the like, with transformers' own init of the module that holds
    one and of every module above it, deepest first (Falcon-H1's model fills its
    layers' `mup_vector`); the owned layers' parameters are initialised or loaded
    after this."""
    holders = {name for name, module in stage.named_modules() if getattr(module, "_non_persistent_buffers_set", None)}
    above = {".".join(name.split(".")[:depth]) for name in holders for depth in range(1, name.count(".") + 1)}
    for name in sorted(holders | above, key=lambda name: -name.count(".")):
        stage._init_weights_fn(stage.get_submodule(name))

"""What Allot needs to know about an HF causal LM to split it, read from the model itself.

One forward of the whole model on the meta device (no weights, no memory) with
a hook on every layer of its chain (core.model.measure.layer_chain: each block
of the block list, every other module with parameters) tells:

- the order the layers run in, and that each runs exactly once;
- what a block returns (a tensor, or a tuple whose first item is the hidden
  states; its other items, attention weights or caches, are read by the model
  only when asked for them, so a stand-in gives None there);
- the output shape past (batch, sequence) of each layer before the blocks,
  so a stage that does not hold one can stand a zero tensor in its place;
- which layers are the input embedding and the head, and whether they share
  their weight (tied).

A model whose layers do not pass just hidden states along the chain (state-space
or recurrent blocks, layers run twice or out of order, parameters outside every
layer) is refused with one line naming what makes it unsupported: the generic
stage split (core.training.engine.hf_stages, docs/design.md "Hugging Face models")
would be wrong for it, so it never tries.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from core.errors import InputError

PROBE_SHAPE = (2, 3)  # batch, tokens of the probe forward (distinct, so a shape tells them apart)
BATCH, TOKENS = -1, -2  # in a zero shape: the batch's size, the number of tokens


@dataclass(frozen=True)
class ModelAnatomy:
    """The split-relevant facts of one HF causal LM config (see the module docstring)."""

    chain: tuple[str, ...]
    blocks: frozenset[str]
    block_outputs: int  # 0: a block returns a tensor; n: a tuple (or list: GPT-1) of n items, hidden states first
    zero_shapes: tuple[tuple[str, tuple[int, ...]], ...]  # layers before the first block: output shape (BATCH, TOKENS, ...)
    embed: str  # the layer that holds the input embedding (the embedding itself, or ModernBERT's embeddings)
    head: str  # the layer that holds the output head
    tied: bool
    embed_weight: str  # the embedding's weight, by its name in the model
    head_weight: str  # the head's weight
    attention: str  # the attention implementation it is built with ("sdpa", or "eager" where SDPA is not supported)
    computed_inputs: frozenset[str] = frozenset()  # see reads_computed_input
    joined_to_previous: frozenset[str] = frozenset()  # see check_stage

    @property
    def tied_names(self) -> tuple[str, str] | None:
        """(embedding's, head's) weight name when they share one."""
        return (self.embed_weight, self.head_weight) if self.tied else None

    def zero_shape(self, layer: str) -> tuple[int, ...] | None:
        """The output shape of a layer before the blocks, BATCH and TOKENS standing for the batch's."""
        return dict(self.zero_shapes).get(layer)

    def reads_computed_input(self, layer: str) -> bool:
        """True for a layer up to the first block whose input the model computes from earlier layers'
        outputs rather than taking the previous layer's output as it is (GPT-2's first block reads the
        sum of its token and position tables; BART's embedding norm the same sum). A stage boundary in
        front of such a layer carries that input (docs/design.md, "Hugging Face models")."""
        return layer in self.computed_inputs

    def check_stage(self, layers: Sequence[str]) -> None:
        """A stage may not start at a layer in front of which the model still needs two tensors of the
        layers before (BlenderBot-Small's position table is added after its embedding norm): a stage
        receives one tensor.

        Raises:
            InputError: naming the layer to keep on the stage before.
        """
        if layers and layers[0] in self.joined_to_previous:
            previous = self.chain[self.chain.index(layers[0]) - 1]
            raise InputError(f"a stage starts at {layers[0]}, but the model still needs more than one tensor of "
                             f"the layers before it there: keep it on one stage with {previous}")


@functools.lru_cache(maxsize=32)
def anatomy_of(config_json: str) -> ModelAnatomy:
    """The anatomy of the model a config (as JSON text) builds (cached per config).

    Raises:
        InputError: the model cannot be built, or cannot be split (the reason in one line).
    """
    import json

    from core.model.hf import build_hf_model_on_meta

    config = json.loads(config_json)
    model = build_hf_model_on_meta(config, torch.float32)
    return probe(model, str(config.get("model_type")))


def probe(model: nn.Module, model_type: str) -> ModelAnatomy:
    """Run the meta model once and read its anatomy (see the module docstring)."""
    from core.model.hf import balanced_experts, forward_hf
    from core.model.measure import _block_list, layer_chain, run_order
    from core.model.meta_attention import flash_attention_on_meta

    chain = layer_chain(model)
    block_ids = {id(block) for block in _block_list(model)}
    _check_parameters_inside_layers(model, chain, model_type)
    _check_no_shared_weights(model, chain, model_type)
    calls: list[str] = []
    outputs: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    block_inputs: list[dict[str, torch.Tensor]] = []  # kept alive: storages are told apart by address
    handles = [module.register_forward_hook(_recorder(name, calls, outputs)) for name, module in chain]
    handles += [module.register_forward_pre_hook(_input_recorder(block_inputs), with_kwargs=True)
                for module in _block_list(model)]
    handles += [module.register_forward_pre_hook(_hidden_input_recorder(name, inputs), with_kwargs=True)
                for name, module in chain]
    try:
        with balanced_experts(model), flash_attention_on_meta(), torch.enable_grad():  # grad: what weights feed
            forward_hf(model, torch.zeros(PROBE_SHAPE, dtype=torch.long, device="meta"))
    except Exception as error:  # transformers fails deep inside on what it cannot run: one line
        raise InputError(_not_run(error, model_type)) from None
    finally:
        for handle in handles:
            handle.remove()
    _check_counts([name for name, _ in chain], calls, model_type)
    names = run_order([name for name, _ in chain], calls)
    _check_side_inputs(names, outputs, block_inputs, model_type)
    _check_no_learned_side_inputs(block_inputs, model_type)
    blocks = frozenset(name for name, module in chain if id(module) in block_ids)
    _check_blocks_together(names, blocks, model_type)
    embed, head, tied, weights = _embeddings(model, names, model_type)
    first_block = min(names.index(name) for name in blocks)
    shapes = tuple((name, _zero_shape(outputs[name], name, model_type)) for name in names[:first_block])
    return ModelAnatomy(chain=tuple(names), blocks=blocks, block_outputs=_block_outputs(outputs, blocks, model_type),
                        zero_shapes=shapes, embed=embed, head=head, tied=tied, embed_weight=weights[0],
                        head_weight=weights[1],
                        attention=str(getattr(getattr(model, "config", None), "_attn_implementation", "sdpa")),
                        computed_inputs=(computed := _computed_inputs(names[:first_block + 1], inputs, outputs)),
                        joined_to_previous=_joined_to_previous(names[:first_block + 1], computed, inputs, outputs))


def hidden_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What a layer takes as its hidden states, from a forward pre-hook's arguments: its first
    positional argument, or `hidden_states` (the probe and the split's boundary hooks read it so)."""
    return args[0] if args else kwargs.get("hidden_states")


def with_hidden_input(args: tuple[Any, ...], kwargs: dict[str, Any], tensor: torch.Tensor
                      ) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A forward pre-hook's arguments with `tensor` as the layer's hidden states (see hidden_input)."""
    if args:
        return (tensor, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": tensor}


def _hidden_input_recorder(name: str, inputs: dict[str, Any]) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        inputs[name] = hidden_input(args, kwargs)
    return hook


def _computed_inputs(names: list[str], inputs: dict[str, Any], outputs: dict[str, Any]) -> frozenset[str]:
    """The layers of `names` (those up to the first block, in run order) whose hidden input is a tensor
    of (batch, tokens, ...) that is neither the previous layer's output nor a view of it."""
    computed = set()
    for previous, name in zip(names, names[1:]):
        given, before = inputs.get(name), _first(outputs[previous])
        if (isinstance(given, torch.Tensor) and given.is_floating_point() and given.dim() >= 3
                and tuple(given.shape[:2]) == PROBE_SHAPE and given is not before and given._base is not before):
            computed.add(name)
    return frozenset(computed)


def _joined_to_previous(names: list[str], computed: frozenset[str], inputs: dict[str, Any],
                        outputs: dict[str, Any]) -> frozenset[str]:
    """The layers of `names` in front of which one tensor cannot carry what the rest of the model
    reads of the layers before: the tensor a boundary there sends (the layer's computed input, or the
    previous layer's output) does not derive from every earlier layer's output."""
    joined = set()
    for index in range(1, len(names)):
        name = names[index]
        sent = inputs[name] if name in computed else _first(outputs[names[index - 1]])
        history = _autograd_history(sent)
        for earlier in names[:index]:
            output = _first(outputs[earlier])
            if output is not sent and output is not getattr(sent, "_base", None) and (
                    output.grad_fn is None or output.grad_fn not in history):
                joined.add(name)
    return frozenset(joined)


def _first(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output[0]


def _autograd_history(tensor: torch.Tensor) -> set[Any]:
    """Every autograd node `tensor` was computed through."""
    seen: set[Any] = set()
    todo = [tensor.grad_fn] if tensor.grad_fn is not None else []
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(child for child, _ in node.next_functions if child is not None)
    return seen


def _not_run(error: Exception, model_type: str) -> str:
    """Why the meta forward failed: a forward that reads tensor values (a routing or sparse
    attention loop: `nonzero`, `item`, `unique`), which meta tensors do not have, or any other reason."""
    from core.model.hf import first_line

    line = first_line(error)
    if isinstance(error, NotImplementedError) or "meta" in line.lower():
        operation = line.split(": ")[0].split(";")[0]
        return (f"'{model_type}' reads tensor values in its forward ({operation}): the meta device, "
                "on which Allot measures and splits a model, has none")
    return f"'{model_type}' does not run as a plain causal LM on token ids: {line}"


def _recorder(name: str, calls: list[str], outputs: dict[str, Any]) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        calls.append(name)
        outputs[name] = output
    return hook


def _check_parameters_inside_layers(model: nn.Module, chain: list[tuple[str, nn.Module]], model_type: str) -> None:
    inside = {id(p) for _, module in chain for p in module.parameters()}
    outside = [name for name, p in model.named_parameters() if id(p) not in inside]
    if outside:
        raise InputError(f"'{model_type}' has parameters outside its layers ({outside[0]}): "
                         "a stage could not tell whether it holds them")


def _check_no_shared_weights(model: Any, chain: list[tuple[str, nn.Module]], model_type: str) -> None:
    """Only the embedding and the head may share a weight (the engines keep that pair's copies
    equal); Zamba's layers share one transformer block, which stages would train apart."""
    try:
        pair = {id(model.get_input_embeddings()), id(model.get_output_embeddings())}
    except (NotImplementedError, AttributeError):
        pair = set()
    tied_pair = {name for name, module in chain if pair & {id(sub) for sub in module.modules()}}
    holders: dict[int, list[str]] = {}
    for name, module in chain:
        for parameter in {id(p): p for p in module.parameters()}:
            holders.setdefault(parameter, []).append(name)
    for layers in holders.values():
        if len(layers) > 1 and set(layers) != tied_pair:
            raise InputError(f"'{model_type}' shares weights among its layers {', '.join(layers)}: "
                             "stages holding them would train separate copies")


def _input_recorder(block_inputs: list[dict[str, torch.Tensor]]) -> Any:
    """Records, per block call, the tensors it takes beside the hidden states, by argument name."""
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        import inspect

        parameters = list(inspect.signature(module.forward).parameters)
        named = {**dict(zip(parameters, args, strict=False)), **kwargs}
        tensors = {name: value for name, value in named.items() if isinstance(value, torch.Tensor)}
        hidden = tensors.get("hidden_states", next(iter(tensors.values()), None))
        block_inputs.append({name: value for name, value in tensors.items() if value is not hidden})
    return hook


def _check_counts(names: list[str], calls: list[str], model_type: str) -> None:
    for name in names:
        count = calls.count(name)
        if count != 1:
            raise InputError(f"'{model_type}' runs its layer {name} {count} times per forward: "
                             "a pipeline stage runs each layer once")


def _check_side_inputs(names: list[str], outputs: dict[str, Any], block_inputs: list[dict[str, torch.Tensor]],
                       model_type: str) -> None:
    """A layer whose output (or a view of it) goes into more than one block (CPM-Ant's
    position bias) feeds the blocks beside the hidden states: a later stage would not have it."""
    storages = [{tensor.untyped_storage()._cdata for tensor in inputs.values()} for inputs in block_inputs]
    for name in names:
        output = outputs[name]
        if not isinstance(output, torch.Tensor):
            continue
        storage = output.untyped_storage()._cdata
        if sum(storage in inputs for inputs in storages) > 1:
            raise InputError(f"'{model_type}' hands the output of its layer {name} to every block beside the "
                             "hidden states: a later stage would not have it")


def _check_no_learned_side_inputs(block_inputs: list[dict[str, torch.Tensor]], model_type: str) -> None:
    """Beside the hidden states a block may take what every stage computes again from the
    token positions alone (masks, rotary cos/sin): nothing computed from the model's weights
    (Gemma 4's per-layer inputs from its token embedding, Gemma 3n's shared key/value
    states), which a later stage would not have."""
    for inputs in block_inputs:
        for name, tensor in inputs.items():
            if tensor.requires_grad:
                raise InputError(f"'{model_type}' hands its blocks {name} beside the hidden states, computed "
                                 "from its weights: a later stage would not have it")


def _check_blocks_together(names: list[str], blocks: frozenset[str], model_type: str) -> None:
    at = sorted(names.index(name) for name in blocks)
    if at[-1] - at[0] + 1 != len(at):
        inside = names[at[0]:at[-1] + 1]
        between = next(name for name in inside if name not in blocks)
        raise InputError(f"'{model_type}' runs its layer {between} between its blocks: "
                         "its stages could not follow one another")


def _block_outputs(outputs: dict[str, Any], blocks: frozenset[str], model_type: str) -> int:
    shapes = set()
    for name in blocks:
        output = outputs[name]
        if isinstance(output, torch.Tensor):
            shapes.add(0)
            continue
        if not isinstance(output, (tuple, list)) or not output or not isinstance(output[0], torch.Tensor):
            raise InputError(f"'{model_type}' blocks return {type(output).__name__}, not hidden states")
        shapes.add(len(output))
    if len(shapes) != 1:
        raise InputError(f"'{model_type}' blocks return different things ({sorted(shapes)})")
    return shapes.pop()


def _embeddings(model: Any, names: list[str], model_type: str) -> tuple[str, str, bool, tuple[str, str]]:
    """(the layer holding the input embedding, the layer holding the head, tied, (their
    weights' names)) from transformers' own accessors."""
    modules = {id(module): name for name, module in model.named_modules()}
    try:
        embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    except (NotImplementedError, AttributeError):
        embedding = head = None
    embed_module = modules.get(id(embedding)) if embedding is not None else None
    head_module = modules.get(id(head)) if head is not None else None
    embed_name, head_name = _layer_holding(embed_module, names), _layer_holding(head_module, names)
    if embed_name is None or head_name is None:
        raise InputError(f"'{model_type}' has no input embedding and output head among its layers")
    if names[0] != embed_name or names[-1] != head_name:
        raise InputError(f"'{model_type}' does not start with its embedding and end with its head")
    tied = getattr(head, "weight", None) is getattr(embedding, "weight", 0)
    return embed_name, head_name, tied, (f"{embed_module}.weight", f"{head_module}.weight")


def _layer_holding(module: str | None, names: list[str]) -> str | None:
    """The layer of the chain that is `module` or holds it."""
    if module is None:
        return None
    return next((name for name in names if module == name or module.startswith(f"{name}.")), None)


def _zero_shape(output: Any, name: str, model_type: str) -> tuple[int, ...]:
    """The output's shape with the probe's batch and token counts as BATCH and TOKENS
    (BART-like learned positions give (tokens, hidden): the model broadcasts them)."""
    if not isinstance(output, torch.Tensor) or TOKENS not in (shape := _symbolic(output.shape)):
        raise InputError(f"'{model_type}' layer {name} does not give a tensor over the tokens")
    return shape


def _symbolic(shape: torch.Size) -> tuple[int, ...]:
    symbols = {PROBE_SHAPE[0]: BATCH, PROBE_SHAPE[1]: TOKENS}
    return tuple(symbols.get(int(size), int(size)) for size in shape)

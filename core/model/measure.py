"""Measure each layer of a model on the meta device: no weights, no RAM.

One forward (and, for training, the loss) runs on meta tensors under torch's
FlopCounterMode and a saved-tensor hook; module hooks attribute what happens
to the layer running at the time:

- params: the layer's own parameters (shared tensors counted in each layer
  that holds them, and marked as a tied group);
- flops: forward FLOPs of one micro-batch, from the flop counter;
- activation_bytes: storage saved for backward (parameters excluded, each
  storage once); with recompute, a block keeps only its input;
- output_bytes: what the layer hands to the next one;
- linears: its linear modules (name inside the layer, d_in, d_out), where LoRA
  adapters and QLoRA's 4-bit weights go (docs/design.md, "Fine-tuning").
- pending_grad_bytes: the gradients of its weighted ops' outputs (each module with
  trainable parameters of its own whose input carries a gradient: a linear, a
  norm, a LoRA adapter) that a split backward keeps from a micro-batch's input
  backward to its weight backward (torch's `stage_backward_input` stores them for
  `stage_backward_weight`), so the zero-bubble schedules hold them between the
  two (docs/design.md, "Chunked schedules"); each the size of the module's output.
- recomputed_bytes: with recompute, what a block's recompute saves (its
  activations without checkpoint); the zero-bubble schedules keep it from a
  micro-batch's input backward to its weight backward
  (core.training.engine.recompute, docs/design.md, "Chunked schedules"); 0
  for a layer that is not recomputed.
- transient_bytes: the working memory of one micro-batch's pass through the
  layer beyond its saved activations and the parameters' gradients: the
  gradients flowing through it and the temporaries of its backward (and of the
  loss, for the last layer), the peak of live storages while it runs, measured
  by a storage tracker over the forward, the loss and the backward on meta
  tensors (core.model.transient). With recompute, a block's backward also
  holds its recomputed activations. A stage holds its largest once
  (docs/design.md, "Cost model v1", the working-memory term).

Attention is measured as the kernel that runs it (core.model.meta_attention).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from core.errors import InputError
from core.model.autocast_meta import end_autocast_region
from core.model.meta_attention import flash_attention_on_meta
from core.model.short_run import as_measured, short_run
from core.model.transient import WorkingMemory


@dataclass(frozen=True)
class LayerCost:
    name: str
    module_type: str
    params: int
    flops: float
    activation_bytes: int
    output_bytes: int
    input_bytes: int
    is_block: bool
    tied_group: str | None = None
    tied_params: int = 0
    linears: tuple[tuple[str, int, int], ...] = ()
    transient_bytes: int = 0
    pending_grad_bytes: int = 0
    recomputed_bytes: int = 0


def layer_chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's layers: each block of its largest ModuleList, and every other
    module with parameters outside it, in registration order (a model measured or
    split is ordered by `run_order`)."""
    blocks = _block_list(model)
    chain: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}{child_name}"
            if child is blocks:
                chain.extend((f"{name}.{i}", block) for i, block in enumerate(child))
            elif any(sub is blocks for sub in child.modules()):
                visit(f"{name}.", child)
            elif any(True for _ in child.parameters()):
                chain.append((name, child))

    visit("", model)
    return chain


def run_order(names: list[str], calls: list[str]) -> list[str]:
    """The layers in the order one forward ran them (`calls`, a name per call) where
    each ran exactly once, else in registration order (`names`): OPT registers its
    final norm before its blocks and runs it after them; a plan's stages follow
    the run (docs/design.md, "Hugging Face models")."""
    if sorted(calls) == sorted(names):
        return list(calls)
    return list(names)


def measure_layers(
    model: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    micro_batch_size: int,
    seq_len: int,
    train: bool,
    recompute: bool,
    host_kernels: bool = False,
) -> list[LayerCost]:
    """Run one micro-batch through a meta model and cost each layer of its chain (`host_kernels`:
    attention as the host CPU runs it, see the module docstring)."""
    chain = layer_chain(model)
    groups = _tied_groups(chain)

    def measured() -> list[LayerCost]:
        return _measure_chain(model, layer_chain(model), groups, forward, loss, micro_batch_size, seq_len, train,
                              recompute, host_kernels)

    with _tied_apart(chain):
        expand: Callable[[list[LayerCost]], list[LayerCost]] | None = None
        try:
            with short_run(model, _block_list(model), tied_layers=groups) as expand:
                costs = measured()
            return expand(costs)
        except Exception:
            if expand is None or expand is as_measured:
                raise
            # a forward that counts on all its blocks (none in transformers' registry does): measure them all
            for parameter in model.parameters():
                parameter.grad = None
            return measured()


def _measure_chain(model: nn.Module, chain: list[tuple[str, nn.Module]], groups: dict[str, tuple[str, int]],
                   forward: Callable[[torch.Tensor], torch.Tensor],
                   loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   micro_batch_size: int, seq_len: int, train: bool, recompute: bool,
                   host_kernels: bool) -> list[LayerCost]:
    recorder = _Recorder(model, chain)
    ids = torch.zeros((micro_batch_size, seq_len), dtype=torch.long, device="meta")
    grad_mode = contextlib.nullcontext() if train else _without_gradients(model)
    handles = recorder.attach()
    working = WorkingMemory(model, [name for name, _ in chain]) if train else None
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(grad_mode)
            stack.enter_context(flash_attention_on_meta(host_kernels))
            counter = stack.enter_context(FlopCounterMode(display=False))
            recorder.counter = counter
            if working is not None:
                handles += working.attach(chain)
                stack.enter_context(working)
            pack = recorder.pack if working is None else (lambda t: working.pack(recorder.pack(t)))
            with torch.autograd.graph.saved_tensors_hooks(pack, _unpack):
                logits = forward(ids)
                end_autocast_region()  # the engines run a stage's forward, not its loss, under autocast
                if train:
                    with recorder.inside(chain[-1][0]):
                        value = loss(logits, ids)
            recorder.end_of_forward()
            if working is not None:
                del logits
                working.backward(value, chain[-1][0])
    except NotImplementedError as error:
        raise InputError(f"cannot run this model on the meta device: {str(error).splitlines()[0]}") from None
    finally:
        for handle in handles:
            handle.remove()
    transient = working.transient_bytes() if working is not None else {}
    return recorder.costs(train, recompute, transient, groups)


@contextlib.contextmanager
def _tied_apart(chain: list[tuple[str, nn.Module]]) -> Iterator[None]:
    """Measure with each tied tensor's later holders given their own copy (meta: no memory), then
    tie back. In the whole model the head's gradient for a tied embedding waits in autograd until
    the embedding's backward adds its own, live through every layer's backward between them; a
    stage that holds only one of them never has it. Each layer's working memory is measured
    without it, and the cost model holds a tied tensor's gradient once per member of a stage
    (docs/design.md, "The complete memory model")."""
    first_holder: dict[int, str] = {}
    moved: list[tuple[nn.Module, str, nn.Parameter]] = []
    for name, layer in chain:
        for module in layer.modules():
            for attribute, parameter in list(module.named_parameters(recurse=False)):
                if first_holder.setdefault(id(parameter), name) != name:
                    copy = nn.Parameter(torch.empty_like(parameter), requires_grad=parameter.requires_grad)
                    module._parameters[attribute] = copy
                    moved.append((module, attribute, parameter))
    try:
        yield
    finally:
        for module, attribute, parameter in moved:
            module._parameters[attribute] = parameter


@contextlib.contextmanager
def _without_gradients(model: nn.Module) -> Iterator[None]:
    """Inference: no graph, and no parameter that asks for one (torch's module tracker, under the flop
    counter, hooks a module's inputs that require grad and fails on a parameter passed as one under
    no_grad, as Mamba's blocks pass theirs)."""
    asking = [p for p in model.parameters() if p.requires_grad]
    for parameter in asking:
        parameter.requires_grad_(False)
    try:
        with torch.no_grad():
            yield
    finally:
        for parameter in asking:
            parameter.requires_grad_(True)


def _unpack(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _block_list(model: nn.Module) -> nn.ModuleList:
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise InputError("the model has no list of blocks to split into layers")
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))


class _Recorder:
    """Attributes flops and saved tensors to the layer that is running."""

    def __init__(self, model: nn.Module, chain: list[tuple[str, nn.Module]]):
        self.chain = chain
        self.blocks = {id(block) for block in _block_list(model)}
        self.param_storages = {p.untyped_storage()._cdata for p in model.parameters()}
        self.counter: FlopCounterMode | None = None
        self.current: str | None = None
        self.flops: dict[str, float] = {}
        self.saved: dict[str, dict[int, int]] = {name: {} for name, _ in chain}
        self.input_bytes: dict[str, int] = {}
        self.output_bytes: dict[str, int] = {}
        self.calls: list[str] = []  # a name per forward call of a layer, in order
        self.pending: dict[str, int] = {}  # pending_grad_bytes per layer (see the module docstring)
        self._flops_at_start = 0.0
        self._forward_done = False

    def attach(self) -> list[torch.utils.hooks.RemovableHandle]:
        handles = []
        for name, module in self.chain:
            handles.append(module.register_forward_pre_hook(self._enter(name)))
            handles.append(module.register_forward_hook(self._leave(name)))
            for inner in module.modules():
                if any(p.requires_grad for p in inner.parameters(recurse=False)):
                    handles.append(inner.register_forward_hook(self._weighted(name)))
        return handles

    def _weighted(self, name: str) -> Callable[..., None]:
        """A module with trainable parameters of its own: where its input carries a gradient, a split
        backward keeps its output's gradient until the weight backward."""
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if any(isinstance(a, torch.Tensor) and a.requires_grad for a in args) and torch.is_grad_enabled():
                self.pending[name] = self.pending.get(name, 0) + _first_tensor_bytes(output)
        return hook

    @contextlib.contextmanager
    def inside(self, name: str) -> Iterator[None]:
        self._start(name)
        yield
        self._stop(name)

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.current is not None:
            storage = tensor.untyped_storage()
            if storage._cdata not in self.param_storages:
                key = id(storage)
                if key not in self.saved[self.current]:
                    # a storage freed before the backward was saved by a graph the step dropped (a router's
                    # side computation): nothing holds it for the backward, and its address may be reused
                    weakref.finalize(storage, self._forget, self.current, key)
                self.saved[self.current][key] = storage.nbytes()
        return tensor

    def end_of_forward(self) -> None:
        """What is saved now is held until the backward: storages freed from here on are not forgotten."""
        self._forward_done = True

    def _forget(self, name: str, key: int) -> None:
        if not self._forward_done:
            self.saved[name].pop(key, None)

    def costs(self, train: bool, recompute: bool, transient: dict[str, int],
              groups: dict[str, tuple[str, int]]) -> list[LayerCost]:
        modules = dict(self.chain)
        result = []
        for name in run_order([name for name, _ in self.chain], self.calls):
            module = modules[name]
            is_block = id(module) in self.blocks
            saved = sum(self.saved[name].values())
            recomputed = saved if train and recompute and is_block else 0
            working = transient.get(name, 0)
            if train and recompute and is_block:
                working += saved  # its backward runs the forward again, keeping what it saves meanwhile
            if not train:
                saved = self.output_bytes.get(name, 0)  # inference keeps only the working activation
            elif recompute and is_block:
                saved = self.input_bytes.get(name, 0)  # a checkpointed block keeps its input
            group, tied = groups.get(name, (None, 0))
            result.append(LayerCost(
                name=name,
                module_type=type(module).__name__,
                params=sum(p.numel() for p in module.parameters()),
                flops=float(self.flops.get(name, 0.0)),
                activation_bytes=int(saved),
                output_bytes=self.output_bytes.get(name, 0),
                input_bytes=self.input_bytes.get(name, 0),
                is_block=is_block,
                tied_group=group,
                tied_params=tied,
                linears=linear_modules(name, module),
                transient_bytes=int(working),
                pending_grad_bytes=self.pending.get(name, 0) if train else 0,
                recomputed_bytes=int(recomputed),
            ))
        return result

    def _enter(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple) -> None:
            self.input_bytes.setdefault(name, _first_tensor_bytes(args))
            self.calls.append(name)
            # a layer's figure holds its own bf16 weight casts only: autocast keeps a stage's unsaved
            # ones (its biases) through the stage's forward, not priced (docs/design.md, "The layer graph")
            end_autocast_region()
            self._start(name)
        return hook

    def _leave(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            self.output_bytes.setdefault(name, _first_tensor_bytes(output))
            self._stop(name)
        return hook

    def _start(self, name: str) -> None:
        self.current = name
        self._flops_at_start = self._total_flops()

    def _stop(self, name: str) -> None:
        self.flops[name] = self.flops.get(name, 0.0) + self._total_flops() - self._flops_at_start
        self.current = None

    def _total_flops(self) -> float:
        return float(self.counter.get_total_flops()) if self.counter is not None else 0.0


def linear_modules(layer_name: str, layer: nn.Module) -> tuple[tuple[str, int, int], ...]:
    """A layer's linear modules: (name inside the layer, as PEFT matches it, d_in, d_out).

    nn.Linear, and transformers' Conv1D (GPT-2), whose weight is stored (d_in, d_out).
    A layer that is itself linear (the LM head) is named by its own last name part.
    """
    found = []
    for name, module in layer.named_modules():
        label = name or layer_name.rsplit(".", 1)[-1]
        if isinstance(module, nn.Linear):
            found.append((label, int(module.in_features), int(module.out_features)))
        elif type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None:
            d_in, d_out = module.weight.shape
            found.append((label, int(d_in), int(d_out)))
    return tuple(found)


def _tied_groups(chain: list[tuple[str, nn.Module]]) -> dict[str, tuple[str, int]]:
    """Layers that share a parameter tensor: name -> (group, shared parameter count)."""
    owners: dict[int, list[str]] = {}
    sizes: dict[int, int] = {}
    for name, module in chain:
        for parameter in module.parameters():
            owners.setdefault(id(parameter), []).append(name)
            sizes[id(parameter)] = parameter.numel()
    result: dict[str, tuple[str, int]] = {}
    for key, names in owners.items():
        if len(names) > 1:
            group = f"tied:{names[0]}"
            for name in names:
                _, already = result.get(name, (group, 0))
                result[name] = (group, already + sizes[key])
    return result


def _first_tensor_bytes(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor_bytes(item)
            if found:
                return found
    if hasattr(value, "to_tuple"):
        return _first_tensor_bytes(value.to_tuple())
    return 0

"""A Hugging Face model's measured activations are what the CPU saves, layer by layer (docs/design.md,
"The complete memory model"): grouped-query attention's key and value heads saved as they are."""

import json

import pytest
import torch

from core.model.graph import build_layer_graph
from core.model.measure import layer_chain
from core.model.model_spec import resolve_model
from core.planning.setup import TrainingSetup
from tests.core.training.engine.hf_support import tiny_llama_config


@pytest.mark.slow  # builds an HF model
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_grouped_query_llama_blocks_save_what_the_cpu_saves(tmp_path, precision):
    from transformers import LlamaForCausalLM

    config = tiny_llama_config(layers=2)  # 4 query heads over 2 key/value heads
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    graph = build_layer_graph(resolve_model(str(tmp_path / "config.json")),
                              TrainingSetup(precision=precision, micro_batch_size=2, seq_len=64))
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config).train()
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    chain = layer_chain(model)
    saved: dict[str, dict[int, int]] = {name: {} for name, _ in chain}
    current = [""]
    for name, module in chain:
        module.register_forward_pre_hook(lambda *_, name=name: current.__setitem__(0, name))

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in params:
            saved[current[0]][storage._cdata] = storage.nbytes()
        return tensor

    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")  # as the engines train
    with autocast, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=torch.zeros((2, 64), dtype=torch.long), use_cache=False)
    blocks = [name for name, _ in chain if ".layers." in name]
    # measured equal to the byte (repeating k and v, as a masked meta forward did, kept 32 KiB more a block here)
    assert {name: graph.nodes[name]["activation_bytes"] for name in blocks} == {
        name: sum(saved[name].values()) for name in blocks}

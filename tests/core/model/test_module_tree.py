"""A model's module tree rebuilt without transformers (core.model.module_tree) is placed by the
real accelerate exactly where the model itself is: on one device, split, tied, offloaded."""

import json
import logging

import pytest
import torch

from core.model.hf import build_hf_model_on_meta
from core.model.hf_source import HFModelSource
from core.model.model_spec import ModelSpec
from core.model.module_tree import describe_module_tree, placeable_hf_model, rebuild_module_tree
from core.system import disk_cache

accelerate = pytest.importorskip("accelerate")
transformers = pytest.importorskip("transformers")

TINY = {
    # untied embedding and head
    "llama": transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128),
    # head tied to the embedding, Conv1D layers
    "gpt2": transformers.GPT2Config(vocab_size=256, n_embd=64, n_layer=3, n_head=4, n_positions=128),
    # experts as 3-D banks, a router per block
    "mixtral": transformers.MixtralConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                          num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                                          num_experts_per_tok=2, max_position_embeddings=128),
}


def tiny_spec(family: str) -> ModelSpec:
    return ModelSpec(f"tiny-{family}", hf_config_json=HFModelSource.of(TINY[family].to_dict()).config_json)


def placed(model, block, budgets):
    logging.getLogger("accelerate.utils.modeling").setLevel(logging.ERROR)  # the planned GPUs are not here
    return accelerate.infer_auto_device_map(model, max_memory=dict(enumerate(budgets)),
                                           no_split_module_classes=[block])


@pytest.mark.parametrize("family", sorted(TINY))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_accelerate_places_the_stand_in_where_it_places_the_model(family, dtype):
    model = build_hf_model_on_meta(tiny_spec(family).hf_config, dtype)
    stand_in = rebuild_module_tree(json.loads(json.dumps(describe_module_tree(model))))  # through JSON, as stored
    block = {"llama": "LlamaDecoderLayer", "gpt2": "GPT2Block", "mixtral": "MixtralDecoderLayer"}[family]
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    places = set()
    for parts in (0.5, 1.6, 3.3, 9.0):  # all on GPU 0 ... split over 4 ... offloaded to disk
        budgets = [int(total / parts * (1 + 0.07 * i)) for i in range(4)]
        expected = placed(model, block, budgets)
        assert placed(stand_in, block, budgets) == expected
        places |= set(expected.values())
    assert {0, 3, "disk"} <= places  # the budgets above reach every case they are meant to


def test_the_stand_in_keeps_names_shapes_dtypes_and_ties():
    model = build_hf_model_on_meta(tiny_spec("gpt2").hf_config, torch.bfloat16)
    stand_in = rebuild_module_tree(describe_module_tree(model))
    expected = {name: (p.shape, p.dtype) for name, p in model.named_parameters(remove_duplicate=False)}
    assert {name: (p.shape, p.dtype) for name, p in stand_in.named_parameters(remove_duplicate=False)} == expected
    assert stand_in.lm_head.weight is stand_in.transformer.wte.weight
    assert [type(m).__name__ for m in stand_in.modules()] == [type(m).__name__ for m in model.modules()]
    assert {name: b.dtype for name, b in stand_in.named_buffers()} == {name: b.dtype for name, b in model.named_buffers()}
    assert all(p.device.type == "meta" for p in stand_in.parameters())


def test_a_model_placed_once_is_rebuilt_from_the_cache(monkeypatch):
    spec = tiny_spec("llama")
    first, block = placeable_hf_model(spec, torch.bfloat16)
    assert type(first).__module__.startswith("transformers.")

    def no_transformers(*args, **kwargs):
        raise AssertionError("built again with transformers")

    monkeypatch.setattr("core.model.hf.build_hf_model_on_meta", no_transformers)
    again, block_again = placeable_hf_model(spec, torch.bfloat16)
    assert type(again).__module__ == "core.model.module_tree" and block_again == block == "LlamaDecoderLayer"
    with disk_cache.bypassed(), pytest.raises(AssertionError, match="built again"):
        placeable_hf_model(spec, torch.bfloat16)


def test_a_module_registered_under_two_names_stays_one_module():
    """Phi-4-multimodal registers one activation under several names: named_modules lists it once,
    and accelerate places it once; the stand-in keeps that (a copy each would be placed twice)."""

    class Block(torch.nn.Module):
        def __init__(self, act: torch.nn.Module):
            super().__init__()
            self.proj = torch.nn.Linear(16, 16)
            self.act = act

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            act = torch.nn.GELU()
            self.blocks = torch.nn.ModuleList(Block(act) for _ in range(3))
            self.act = act

    with torch.device("meta"):
        model = Model()
    stand_in = rebuild_module_tree(json.loads(json.dumps(describe_module_tree(model))))
    assert [name for name, _ in stand_in.named_modules()] == [name for name, _ in model.named_modules()]
    assert stand_in.get_submodule("blocks.0.act") is stand_in.get_submodule("blocks.2.act") is stand_in.act
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    for parts in (0.5, 1.5, 2.5):
        budgets = [int(total / parts)] * 3
        assert placed(stand_in, "Block", budgets) == placed(model, "Block", budgets)


@pytest.mark.slow  # every supported causal-LM type of transformers' registry, built tiny on meta: about 10 s
def test_accelerate_places_every_supported_types_stand_in_where_it_places_the_model():
    """Over resources/hf_coverage.json's supported types (the registry less what Allot refuses)."""
    import warnings

    from core.model.hf_source import coverage
    from core.model.measure import layer_chain
    from tests.core.training.engine.hf_registry_support import tiny_config

    different = []
    supported = sorted(coverage()["supported"])
    for model_type in supported:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_hf_model_on_meta(tiny_config(model_type).to_dict(), torch.bfloat16)
        blocks = [type(module).__name__ for name, module in layer_chain(model) if name.rsplit(".", 1)[-1].isdigit()]
        stand_in = rebuild_module_tree(json.loads(json.dumps(describe_module_tree(model))))
        total = sum(p.numel() * p.element_size() for p in model.parameters())
        for parts in (0.5, 1.6, 3.3, 9.0):
            budgets = [int(total / parts * (1 + 0.07 * i)) for i in range(4)]
            block = blocks[0] if blocks else ""
            if placed(stand_in, block, budgets) != placed(model, block, budgets):
                different.append((model_type, parts))
                break
    assert not different
    assert len(supported) >= 60

"""Layer graphs built on the meta device: exact parameter counts, FLOPs and bytes."""

import networkx as nx
import pytest

from core.errors import InputError
from core.model.config import GPTConfig, GPTSize, ModelChoice
from core.model.gpt import GPT
from core.model.graph import build_layer_graph, graph_layers
from core.model.model_spec import resolve_choice, resolve_model
from core.planning.setup import TrainingSetup


def nano_setup(**kw: object) -> TrainingSetup:
    return TrainingSetup(**{"micro_batch_size": 2, "seq_len": 64, "precision": "fp32", **kw})  # type: ignore[arg-type]


def test_builtin_gpt_nodes_are_its_module_names_in_order():
    graph = build_layer_graph(resolve_model("gpt-nano"), nano_setup())
    assert graph.graph["order"] == ["embed", "h.0", "h.1", "h.2", "h.3", "h.4", "ln_f", "lm_head"]
    assert nx.is_directed_acyclic_graph(graph)
    assert list(graph.edges) == list(zip(graph.graph["order"], graph.graph["order"][1:]))


def test_parameter_counts_are_the_modules_own():
    config = GPTConfig(n_layer=2, n_head=2, d_model=32, vocab_size=50, seq_len=64)
    model = GPT(config)
    graph = build_layer_graph(resolve_choice(ModelChoice.of_size(GPTSize(2, 32, 2, 50, 64))), nano_setup())
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in model.layers()}
    assert {n: graph.nodes[n]["params"] for n in counts} == counts
    # The tied embedding counts in both layers that hold it, and is marked as shared.
    assert graph.nodes["lm_head"]["tied_group"] == graph.nodes["embed"]["tied_group"] is not None
    assert graph.nodes["lm_head"]["tied_params"] == 50 * 32
    assert graph.graph["total_params"] == sum(p.numel() for p in model.parameters())


def test_pending_gradients_are_the_outputs_of_the_weighted_modules_a_gradient_reaches():
    # A split backward keeps each weighted op's output gradient from input to weight backward
    # (docs/design.md, "Chunked schedules"). A block of gpt-nano (d = 128, b x s = 2 x 64 = 128
    # tokens, fp32): ln_1 (d) + q, k, v (3d) + out (d) + ln_2 (d) + fc (4d) + proj (d) = 11d a token.
    # The embedding's input (token ids) carries no gradient; the head's output is the logits.
    tokens, d = 2 * 64, 128
    graph = build_layer_graph(resolve_model("gpt-nano"), nano_setup())
    assert graph.nodes["h.0"]["pending_grad_bytes"] == 11 * d * tokens * 4
    assert graph.nodes["embed"]["pending_grad_bytes"] == 0
    assert graph.nodes["ln_f"]["pending_grad_bytes"] == d * tokens * 4
    assert graph.nodes["lm_head"]["pending_grad_bytes"] == 256 * tokens * 4
    assert build_layer_graph(resolve_model("gpt-nano"), nano_setup(mode="infer")).nodes["h.0"]["pending_grad_bytes"] == 0


def test_block_flops_are_matmuls_plus_attention():
    # Per block: 12 d^2 weights in matmuls, 2 FLOPs each per token; attention scores and
    # values: 2 * 2 * b * s^2 * d. b = 2, s = 64, d = 128.
    b, s, d = 2, 64, 128
    graph = build_layer_graph(resolve_model("gpt-nano"), nano_setup())
    assert graph.nodes["h.0"]["flops"] == 2 * 12 * d * d * b * s + 4 * b * s * s * d
    assert graph.nodes["lm_head"]["flops"] == 2 * b * s * d * 256
    assert graph.nodes["embed"]["flops"] == 0


def test_output_bytes_are_the_hidden_state():
    graph = build_layer_graph(resolve_model("gpt-nano"), nano_setup())
    assert graph.nodes["h.0"]["output_bytes"] == 2 * 64 * 128 * 4  # fp32
    bf16 = build_layer_graph(resolve_model("gpt-nano"), nano_setup(precision="bf16", mode="infer"))
    assert bf16.nodes["h.0"]["output_bytes"] == 2 * 64 * 128 * 2
    # bf16 training is autocast over fp32 weights: the residual stream a block hands on stays fp32
    autocast = build_layer_graph(resolve_model("gpt-nano"), nano_setup(precision="bf16"))
    assert autocast.nodes["h.0"]["output_bytes"] == 2 * 64 * 128 * 4


def test_recompute_keeps_only_block_inputs_and_inference_only_outputs():
    full = build_layer_graph(resolve_model("gpt-nano"), nano_setup())
    recompute = build_layer_graph(resolve_model("gpt-nano"), nano_setup(recompute=True))
    infer = build_layer_graph(resolve_model("gpt-nano"), nano_setup(mode="infer"))
    hidden = 2 * 64 * 128 * 4
    assert recompute.nodes["h.1"]["activation_bytes"] == hidden
    assert full.nodes["h.1"]["activation_bytes"] > 10 * hidden  # layer norms, qkv, attention, mlp
    assert infer.nodes["h.1"]["activation_bytes"] == hidden


def test_saved_bytes_grow_linearly_with_sequence_under_flash_attention():
    short = build_layer_graph(resolve_model("gpt-nano"), nano_setup(seq_len=64))
    long = build_layer_graph(resolve_model("gpt-nano"), nano_setup(seq_len=256))
    ratio = long.nodes["h.0"]["activation_bytes"] / short.nodes["h.0"]["activation_bytes"]
    assert ratio == pytest.approx(4.0, rel=0.02)  # no seq x seq score matrix is kept


@pytest.mark.parametrize("name, layers, params", [
    ("gpt2", 16, 124_439_808),
    pytest.param("llama-2-7b", 35, 6_738_415_616, marks=pytest.mark.slow),  # 1.4 s to build on meta
    pytest.param("mixtral-8x7b", 35, 46_702_792_704, marks=pytest.mark.slow),  # 1.8 s
])  # llama-2-70b: test_a_70b_graph_allocates_no_weights_and_has_its_published_size
def test_hf_presets_have_their_published_sizes(name, layers, params):
    graph = build_layer_graph(resolve_model(name), TrainingSetup(seq_len=512))
    assert len(graph) == layers
    assert graph.graph["total_params"] == params


@pytest.mark.slow  # 1.3 s to build a 7B graph on the meta device
def test_hf_layer_names_are_module_names():
    graph = build_layer_graph(resolve_model("llama-2-7b"), TrainingSetup(seq_len=256))
    order = graph.graph["order"]
    assert order[:2] == ["model.embed_tokens", "model.layers.0"]
    assert order[-3:] == ["model.layers.31", "model.norm", "lm_head"]
    layers = graph_layers(graph)
    assert [layer.name for layer in layers] == order


@pytest.mark.slow  # 1.5 s: a llama block counted on the meta device
def test_llama_block_flops_match_the_analytic_count():
    # Weights 4 d^2 (attention, 32 of 32 heads) + 3 d f (SwiGLU): 2 FLOPs per weight per
    # token, and 4 s^2 d for attention. d = 4096, f = 11008, s = 256, b = 1.
    graph = build_layer_graph(resolve_model("llama-2-7b"), TrainingSetup(seq_len=256))
    d, f, s = 4096, 11008, 256
    assert graph.nodes["model.layers.0"]["flops"] == 2 * (4 * d * d + 3 * d * f) * s + 4 * s * s * d


def test_a_local_config_file_is_a_model(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 100}')
    graph = build_layer_graph(resolve_model(str(config)), TrainingSetup(seq_len=32))
    assert graph.graph["order"][-1] == "lm_head"
    assert len(graph) == 6  # wte, wpe, 2 blocks, ln_f, lm_head


@pytest.mark.slow  # builds a Mamba model on the meta device
def test_a_model_whose_blocks_take_a_parameter_as_an_input_plans_for_inference(tmp_path):
    """torch's module tracker (under the flop counter) hooks inputs that require grad and fails on a
    parameter passed as one under no_grad (Mamba's mixer): inference is measured without gradients."""
    from tests.core.training.engine.hf_registry_support import tiny_config

    config = tmp_path / "config.json"
    config.write_text(tiny_config("mamba").to_json_string())
    graph = build_layer_graph(resolve_model(str(config)), TrainingSetup(seq_len=16, mode="infer"))
    blocks = [node for node in graph.graph["order"] if graph.nodes[node]["is_block"]]
    assert len(blocks) == 2 and all(graph.nodes[node]["flops"] > 0 for node in blocks)


@pytest.mark.parametrize("model, message", [
    ("gpt-9000", "unknown model"),
    ("missing/config.json", "cannot read"),
])
def test_bad_models_are_one_line_errors(model, message):
    with pytest.raises(InputError, match=message):
        resolve_model(model)


def test_sequence_beyond_an_hf_context_is_refused():
    with pytest.raises(InputError, match="exceeds"):
        build_layer_graph(resolve_model("gpt2"), TrainingSetup(seq_len=2048))


@pytest.mark.slow  # builds the 70B model (on the meta device)
def test_a_70b_graph_allocates_no_weights_and_has_its_published_size():
    # 69B parameters would be 128 GiB in bf16; on the meta device the process barely grows.
    import psutil

    process = psutil.Process()
    before = process.memory_info().rss
    graph = build_layer_graph(resolve_model("llama-2-70b"), TrainingSetup(seq_len=4096, micro_batch_size=2))
    assert process.memory_info().rss - before < 1024**3
    assert len(graph) == 83
    assert graph.graph["total_params"] == 68_976_648_192

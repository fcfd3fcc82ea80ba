"""Where an HF stage may start (core.model.hf_anatomy): GPT-2 adds its token and position tables into the
first block's input, so a boundary in front of that block carries the sum (the model's first block reads
a computed input); BlenderBot-Small adds its position table after its embedding norm, so a boundary in
front of that norm would need two tensors, and a stage may not start there."""

import pytest

from core.errors import InputError
from core.model.hf_anatomy import ModelAnatomy, anatomy_of
from core.model.hf_source import HFModelSource

BLOCKS = ("model.decoder.layers.0", "model.decoder.layers.1")
BEFORE = ("model.decoder.embed_tokens", "model.decoder.embed_positions", "model.decoder.layernorm_embedding")


def anatomy(joined: frozenset[str]) -> ModelAnatomy:
    return ModelAnatomy(chain=(*BEFORE, *BLOCKS, "lm_head"), blocks=frozenset(BLOCKS), block_outputs=1,
                        zero_shapes=tuple((name, (-1, -2, 64)) for name in BEFORE), embed=BEFORE[0],
                        head="lm_head", tied=True, embed_weight=f"{BEFORE[0]}.weight",
                        head_weight="lm_head.weight", attention="sdpa", joined_to_previous=joined)


def test_a_stage_cannot_start_where_the_model_still_needs_two_tensors():
    model = anatomy(frozenset({"model.decoder.layernorm_embedding"}))
    with pytest.raises(InputError, match="a stage starts at model.decoder.layernorm_embedding, but the model still "
                                         "needs more than one tensor of the layers before it there: keep it on "
                                         "one stage with model.decoder.embed_positions"):
        model.check_stage(("model.decoder.layernorm_embedding", *BLOCKS))
    for start in (1, 3, 4):
        model.check_stage(model.chain[start:])


def _anatomy(model_type: str) -> ModelAnatomy:
    from tests.core.training.engine.hf_registry_support import tiny_config

    return anatomy_of(HFModelSource.of(tiny_config(model_type).to_dict()).config_json)


def test_what_each_boundary_before_the_blocks_carries_is_read_from_the_model():
    gpt2 = _anatomy("gpt2")
    assert gpt2.computed_inputs == {"transformer.h.0"}  # the sum of wte's and wpe's outputs
    assert gpt2.joined_to_previous == frozenset()  # every boundary carries one tensor
    llama = _anatomy("llama")
    assert llama.computed_inputs == frozenset() and llama.joined_to_previous == frozenset()
    blenderbot = _anatomy("blenderbot-small")  # norm(embed * scale) + positions
    assert blenderbot.computed_inputs == {"model.decoder.layernorm_embedding", "model.decoder.layers.0"}
    assert blenderbot.joined_to_previous == {"model.decoder.layernorm_embedding"}


@pytest.mark.slow  # builds a tiny GPT-2, plans it and runs a 4-process pipeline
def test_train_runs_a_plan_that_starts_a_stage_at_gpt2s_first_block(tmp_path, capsys):
    """The uniform baseline cuts a 4-layer GPT-2's 8 layers two by two: its second stage starts at
    transformer.h.0 and receives the sum of the token and position tables. `train --plan` runs it."""
    import json

    import main
    from tests.core.training.engine.hf_support import save_model, tiny_gpt2_config

    model = save_model(tiny_gpt2_config(layers=4), tmp_path / "gpt2")
    assert main.main(["plan", "--model", str(model), "--devices", "4xcpu:2GiB", "--seq", "32", "--solver", "uniform",
                      "--json"]) == 0
    plan = tmp_path / "plan.json"
    plan.write_text(capsys.readouterr().out)
    assert json.loads(plan.read_text())["stages"][1]["layer_indices"] == [2, 3]  # transformer.h.0, h.1
    run = tmp_path / "run"
    assert main.main(["train", "--model", str(model), "--devices", "4xcpu:2GiB", "--seq", "32", "--plan", str(plan),
                      "--steps", "2", "--run-dir", str(run)]) == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "loss" in row][-1] == 2


def test_the_planner_keeps_blenderbot_smalls_embedding_norm_with_the_layer_before():
    """The layer graph carries the rule to every solver (`joins_previous`, docs/design.md)."""
    from core.model.graph import build_layer_graph, graph_layers
    from core.model.model_spec import ModelSpec
    from core.planning.setup import TrainingSetup
    from tests.core.training.engine.hf_registry_support import tiny_config

    setup = TrainingSetup(precision="fp32", micro_batch_size=4, seq_len=8, micro_batches=2)
    layers = {}
    for model_type in ("blenderbot-small", "gpt2"):
        spec = ModelSpec(name=model_type, hf_config_json=HFModelSource.of(tiny_config(model_type).to_dict()).config_json)
        layers[model_type] = {layer.name: layer for layer in graph_layers(build_layer_graph(spec, setup))}
    assert [name for name, layer in layers["blenderbot-small"].items() if layer.joins_previous] == [
        "model.decoder.layernorm_embedding"]
    gpt2 = layers["gpt2"]
    assert not any(layer.joins_previous for layer in gpt2.values())
    # the boundary in front of the first block carries the summed tables, 4 x 8 hidden states, not the
    # position table's own output (batch 1)
    assert gpt2["transformer.wpe"].output_bytes == gpt2["transformer.h.0"].output_bytes == 4 * 8 * 32 * 4

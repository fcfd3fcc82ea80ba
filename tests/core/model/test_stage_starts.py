"""Where an HF stage may start (core.model.hf_anatomy.ModelAnatomy.check_stage): GPT-2 adds its token and
position tables into the first block's input, so a stage that starts at the position table or at the
first block would receive one of them only; a llama's one embedding may end a stage."""

import pytest

from core.errors import InputError
from core.model.hf_anatomy import ModelAnatomy

BLOCKS = ("transformer.h.0", "transformer.h.1")


def anatomy(before: tuple[str, ...]) -> ModelAnatomy:
    return ModelAnatomy(chain=(*before, *BLOCKS, "transformer.ln_f", "lm_head"), blocks=frozenset(BLOCKS),
                        block_outputs=1, zero_shapes=tuple((name, (-1, -2, 64)) for name in before),
                        embed=before[0], head="lm_head", tied=True, embed_weight=f"{before[0]}.weight",
                        head_weight="lm_head.weight", attention="sdpa")


@pytest.mark.parametrize("start", ["transformer.wpe", "transformer.h.0"])
def test_a_stage_cannot_start_where_gpt2_combines_its_tables(start):
    gpt2 = anatomy(("transformer.wte", "transformer.wpe"))
    with pytest.raises(InputError, match=f"a stage starts at {start}, but the model combines the outputs of "
                                         "transformer.wte, transformer.wpe into transformer.h.0's input"):
        gpt2.check_stage((start, "transformer.h.1"))


def test_a_stage_may_start_after_the_first_block_or_after_a_single_embedding():
    gpt2 = anatomy(("transformer.wte", "transformer.wpe"))
    gpt2.check_stage(("transformer.wte", "transformer.wpe", "transformer.h.0"))
    gpt2.check_stage(("transformer.h.1", "transformer.ln_f", "lm_head"))
    llama_like = anatomy(("transformer.wte",))
    llama_like.check_stage(("transformer.h.0", "transformer.h.1"))


@pytest.mark.slow  # builds a tiny GPT-2 and plans it
def test_train_refuses_a_plan_that_starts_a_stage_at_gpt2s_first_block(tmp_path, capsys):
    """The uniform baseline cuts a 4-layer GPT-2's 8 layers two by two: its second stage starts at
    transformer.h.0. `train --plan` refuses it in one line, exit 2, before writing the run."""
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
                      "--steps", "2", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "a stage starts at transformer.h.0" in err and err.count("\n") == 1 and not run.exists()

"""`main.py train --finetune lora --data chat.jsonl --save-adapter OUT`: the README's
fine-tuning commands. The loss falls, PEFT loads OUT and gives the training stages'
logits, the merged --save-hf model gives them too; bad input is one line, exit 2."""

from __future__ import annotations

import json

import pytest
import torch

from main import main
from tests.cli.test_train_command import assert_one_line_error
from tests.core.training.chat_support import chat_llama_dir, write_chat_file
from tests.core.training.support import losses


@pytest.fixture(scope="module")
def model_and_chats(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat-llama")
    return chat_llama_dir(root / "tiny-llama"), write_chat_file(root / "chat.jsonl")


def lora_args(model, data, run_dir, *extra):
    return ["train", "--model", str(model), "--finetune", "lora", "--devices", "2xcpu:2GiB", "--data", str(data),
            "--run-dir", str(run_dir), "--seq-len", "32", "--micro-batch-size", "4", "--micro-batches", "2",
            *extra]


def trained_stage_logits(run_dir, ids):
    """The run's stages, rebuilt with the adapters of its latest checkpoint, in eval mode."""
    from core.training.engine import checkpoint as ckpt
    from core.training.engine.adapters import load_trainable_state
    from core.training.engine.context import RunContext
    from core.training.engine.model_stages import build_stages

    context = RunContext.load(run_dir)
    latest = ckpt.latest_checkpoint(context.paths.checkpoints)
    hidden = ids
    for index, stage in enumerate(build_stages(context, range(context.num_stages),
                                               [torch.device("cpu")] * context.num_stages, untie=True)):
        load_trainable_state(stage, ckpt.load_stage_file(latest, index)["model"])
        hidden = stage.eval()(hidden)
    return hidden


@pytest.mark.slow  # one 2-stage pipeline LoRA run on chat data
def test_lora_on_chats_learns_and_peft_loads_the_adapters(tmp_path, model_and_chats):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, chats = model_and_chats
    out, merged = tmp_path / "adapter", tmp_path / "merged"
    code = main(lora_args(model, chats, tmp_path / "run", "--steps", "16", "--lr", "3e-3",
                          "--save-adapter", str(out), "--save-hf", str(merged)))
    assert code == 0
    curve = losses(tmp_path / "run")
    assert sum(curve[-3:]) / 3 < curve[0] - 0.2, curve
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 16 and config["peft_type"] == "LORA" and config["base_model_name_or_path"] == str(model)
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = trained_stage_logits(tmp_path / "run", ids)
        base = AutoModelForCausalLM.from_pretrained(model)
        assert not torch.allclose(base(input_ids=ids).logits, want, atol=1e-3)  # the adapters changed it
        loaded = PeftModel.from_pretrained(base, out).eval()
        torch.testing.assert_close(loaded(input_ids=ids).logits, want, rtol=1e-5, atol=1e-5)
        # merging re-associates W x + B A x as (W + B A) x: rounding of 5e-7 measured on logits of about 1
        merged_model = AutoModelForCausalLM.from_pretrained(merged).eval()
        torch.testing.assert_close(merged_model(input_ids=ids).logits, want, rtol=1e-4, atol=1e-4)


def test_a_bad_line_of_the_data_is_one_line_and_writes_nothing(tmp_path, model_and_chats, capsys):
    model, chats = model_and_chats
    bad = tmp_path / "bad.jsonl"
    bad.write_text(chats.read_text() + '{"messages": "hi"}\n')
    lines = len(chats.read_text().splitlines())
    code = main(lora_args(model, bad, tmp_path / "run", "--steps", "3"))
    assert_one_line_error(capsys, code, f"line {lines + 1}", '"messages" must be a non-empty list')
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("extra", "words"), [
    (("--finetune", "full"), ("--save-adapter saves LoRA adapters",)),
    (("--model", "gpt-nano"), ("Hugging Face models",)),
])
def test_save_adapter_needs_an_hf_adapter_run(tmp_path, model_and_chats, capsys, extra, words):
    model, chats = model_and_chats
    args = lora_args(model, chats, tmp_path / "run", "--steps", "3", "--save-adapter", str(tmp_path / "out"))
    flag = args.index(extra[0])
    args[flag + 1] = extra[1]
    assert_one_line_error(capsys, main(args), *words)
    assert not (tmp_path / "run").exists()


def test_chat_data_needs_a_model_folder_with_a_tokenizer(tmp_path, model_and_chats, capsys):
    _, chats = model_and_chats
    code = main(lora_args("gpt-nano", chats, tmp_path / "run", "--steps", "3"))
    assert_one_line_error(capsys, code, "needs a model folder with its tokenizer")
    assert not (tmp_path / "run").exists()


def test_lora_targets_the_model_lacks_are_one_line(tmp_path, model_and_chats, capsys):
    model, chats = model_and_chats
    code = main(lora_args(model, chats, tmp_path / "run", "--steps", "3", "--lora-targets", "q_proj,wq"))
    assert_one_line_error(capsys, code, "--lora-targets wq", "q_proj")
    assert not (tmp_path / "run").exists()

"""A tiny llama with a tokenizer and a chat template, and a small chat file, made here (nothing
downloaded): what the README's fine-tuning commands train on, and what the tests use.

    python3 examples/tiny_chat.py runs/tiny-chat-llama runs/chat.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# A llama-3-like template: each turn is <|role|>, a newline, the content and <|end|>.
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
SPECIAL = ["<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
VOCAB = 384
QUESTIONS = ("what is the plan", "which device holds the head", "how many stages", "is the loss falling",
             "where is the checkpoint", "what does lora train")
ANSWERS = ("two stages on two devices", "the last stage holds the head", "the plan has two stages",
           "yes the loss falls", "in the run directory", "only the adapters train")


def save_tokenizer(directory: Path, corpus: str) -> Any:
    """A byte-level BPE trained on `corpus` with the chat template, saved as transformers does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 16, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([corpus], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                        chat_template=CHAT_TEMPLATE)
    tokenizer.save_pretrained(directory)
    return tokenizer


def tiny_chat_llama(directory: Path, layers: int = 4) -> Path:
    """A tiny llama (vocabulary VOCAB, random weights) with its tokenizer and chat template beside it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=0, eos_token_id=1)
    LlamaForCausalLM(config).save_pretrained(directory)
    save_tokenizer(directory, " ".join(QUESTIONS + ANSWERS) * 20)
    return directory


def write_chat_file(path: Path, examples: int = 60) -> Path:
    """Chats (some with a system turn, some of two exchanges), a prompt/completion pair and a text."""
    lines = []
    for i in range(examples):
        q, a = QUESTIONS[i % len(QUESTIONS)], ANSWERS[i % len(ANSWERS)]
        messages = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        if i % 3 == 0:
            messages.insert(0, {"role": "system", "content": "answer briefly"})
        if i % 4 == 0:
            messages += [{"role": "user", "content": QUESTIONS[(i + 1) % len(QUESTIONS)]},
                         {"role": "assistant", "content": ANSWERS[(i + 1) % len(ANSWERS)]}]
        lines.append(json.dumps({"messages": messages}))
    lines.append(json.dumps({"prompt": "question: " + QUESTIONS[0] + "\nanswer: ", "completion": ANSWERS[0]}))
    lines.append(json.dumps({"text": ANSWERS[1]}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    tiny_chat_llama(Path(sys.argv[1]))
    write_chat_file(Path(sys.argv[2]))
    print(f"wrote {sys.argv[1]} (model, tokenizer, chat template) and {sys.argv[2]}")

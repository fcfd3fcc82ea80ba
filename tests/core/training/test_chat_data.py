"""Fine-tuning data (.jsonl): the loss is on the assistant and completion tokens only, exactly;
examples are packed into rows, split by their text, and drawn statelessly; a bad line is named."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import InputError
from core.training.chat_data import (
    IGNORED,
    Example,
    PackedData,
    example_tokens,
    pack,
    pack_file,
    read_examples,
    write_packed_data,
)
from tests.core.training.chat_support import VOCAB, save_tokenizer, write_chat_file

Q, A = "what is the plan", "two stages on two devices"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return save_tokenizer(tmp_path_factory.mktemp("tokenizer"), (Q + " " + A + " ") * 20)


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _one(tmp_path, tokenizer, record):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps({"text": "x"}) + "\n")
    return read_examples(path, tokenizer)[0]


def test_a_chat_trains_on_the_assistant_turns_exactly(tmp_path, tokenizer):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": Q},
                {"role": "assistant", "content": A}, {"role": "user", "content": Q},
                {"role": "assistant", "content": "yes"}]
    ids, labels = example_tokens(_one(tmp_path, tokenizer, {"messages": messages}), tokenizer)
    # the template's rendering, piece by piece: untrained up to each assistant turn, trained through its end
    pieces = [("<s><|system|>\nbe brief<|end|>\n<|user|>\n" + Q + "<|end|>\n<|assistant|>\n", False),
              (A + "<|end|>\n", True), ("<|user|>\n" + Q + "<|end|>\n<|assistant|>\n", False),
              ("yes<|end|>\n", True)]
    want_ids = [i for text, _ in pieces for i in _ids(tokenizer, text)]
    want_labels = [i if trained else IGNORED for text, trained in pieces for i in _ids(tokenizer, text)]
    assert ids.tolist() == want_ids
    assert labels.tolist() == want_labels


def test_a_pair_trains_on_the_completion_and_the_end_token(tmp_path, tokenizer):
    ids, labels = example_tokens(_one(tmp_path, tokenizer, {"prompt": Q + "?", "completion": A}), tokenizer)
    trained = ids[labels != IGNORED]
    assert tokenizer.decode(trained) == A + "</s>"
    assert tokenizer.decode(ids[labels == IGNORED]) == Q + "?"
    assert np.array_equal(labels[labels != IGNORED], trained)


def test_a_text_trains_on_every_token(tmp_path, tokenizer):
    ids, labels = example_tokens(_one(tmp_path, tokenizer, {"text": A}), tokenizer)
    assert np.array_equal(ids, labels) and tokenizer.decode(ids) == A + "</s>"


def test_packing_cuts_rows_pads_the_last_and_drops_rows_with_nothing_to_train():
    untrained = (np.arange(10), np.full(10, IGNORED))
    trained = (np.arange(10, 15), np.arange(10, 15))
    ids, labels = pack([untrained, trained], row_tokens=4, pad_id=99)
    # 15 tokens -> 4 rows of 4 (one pad); rows 0 and 1 have no trained target (a row's targets are tokens 1..)
    assert ids.tolist() == [[8, 9, 10, 11], [12, 13, 14, 99]]
    assert labels.tolist() == [[IGNORED, IGNORED, 10, 11], [12, 13, 14, IGNORED]]


def test_batches_hold_the_trained_targets_and_depend_on_seed_and_step_alone(tmp_path, tokenizer):
    corpus = pack_file(write_chat_file(tmp_path / "chat.jsonl"), tokenizer, 32, 0.1, VOCAB)
    write_packed_data(tmp_path, corpus)
    data = PackedData(tmp_path, corpus.meta)
    x, y = data.train_batch(seed=1, step=7, rows=4, seq_len=32)
    again_x, again_y = PackedData(tmp_path, corpus.meta).train_batch(seed=1, step=7, rows=4, seq_len=32)
    assert x.shape == y.shape == (4, 32) and x.equal(again_x) and y.equal(again_y)
    trained = y != IGNORED
    assert trained.any()
    assert x[:, 1:].eq(y[:, :-1])[trained[:, :-1]].all()  # a target is the next input token
    words = set(tokenizer.decode(y[trained]).replace("<|end|>", " ").replace("</s>", " ").split())
    assert words and not words & {"what", "which", "how", "where", "does", "briefly", "question:"}  # no prompt


def test_the_split_follows_the_text_of_each_example(tmp_path, tokenizer):
    path = write_chat_file(tmp_path / "chat.jsonl")
    first = pack_file(path, tokenizer, 32, 0.1, VOCAB)
    lines = path.read_text().splitlines()
    (tmp_path / "shuffled.jsonl").write_text("\n".join(lines[::-1]) + "\n")
    second = pack_file(tmp_path / "shuffled.jsonl", tokenizer, 32, 0.1, VOCAB)
    assert first.meta["val_examples"] == second.meta["val_examples"] > 0
    assert first.meta["train_examples"] + first.meta["val_examples"] == len(lines)


@pytest.mark.parametrize(("line", "words"), [
    ("{not json", ("line 3", "not JSON")),
    ('["a list"]', ("line 3", "expected an object")),
    ('{"question": "?"}', ("line 3", '"messages"', "question")),
    ('{"prompt": "a"}', ("line 3", '"completion" must be a string')),
    ('{"messages": [{"role": "user", "content": "hi"}]}', ("line 3", "no assistant message")),
    ('{"messages": [{"role": "bot", "content": "hi"}]}', ("line 3", "role 'bot'")),
])
def test_a_bad_line_is_named_by_its_number(tmp_path, tokenizer, line, words):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "a"}) + "\n\n" + line + "\n")  # the blank line still counts
    with pytest.raises(InputError) as error:
        read_examples(path, tokenizer)
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_an_example_is_its_line_and_spans():
    assert Example(3, "ab", ((1, 2),), True).trained == ((1, 2),)

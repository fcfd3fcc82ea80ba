"""Fine-tuning data: a JSON Lines file of chats, prompt/completion pairs or texts
(`train --data FILE.jsonl`; docs/training.md, "Fine-tuning data").

One JSON object a line, in any of three forms (blank lines are skipped):

    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}
    {"prompt": "...", "completion": "..."}
    {"text": "..."}

Chats are rendered by the model folder's own chat template (its
tokenizer_config.json, through transformers' `apply_chat_template`); the loss
is taken on the assistant turns only (each as the template renders it, end of
turn included), on the completion (and an end-of-text token) of a pair, and on
the whole of a text. Every other target is -100, which the loss ignores.

Which characters are an assistant turn: the conversation up to the turn with
the generation prompt, and up to the end of the turn, are rendered; the turn is
the text between them (the template must render each turn as a prefix of the
whole, else one line says so). The whole text is tokenized once with offsets,
and a token is trained on when any of its characters is in such a span (" two"
after "answer:" is trained, its space included).

Packing: the examples of a split, in file order, are concatenated and cut into
rows of seq_len + 1 tokens (the last one padded with untrained end-of-text
tokens); rows without a trained target are dropped. Attention crosses examples
inside a row: the stages run one causal mask over the row (as transformers'
and TRL's plain packing do); an example sees the end of the one before it, but
its loss is only its own tokens'.

Split and resume: an example goes to validation when a CRC-32 of its line says
so (val_fraction of them; at least one), so the split depends only on the
file. Packed rows are stored in the run directory (data/train.bin,
train_labels.bin, val.bin, val_labels.bin as int32) and a step's rows are drawn
from (seed, step) alone, as for raw text: a resumed run sees exactly the rows
an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError

JSONL_SUFFIX = ".jsonl"
IGNORED = -100  # a target the loss skips (torch's cross_entropy ignore_index)
PACKED = "packed"
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Example:
    """One line of the file as text, and the character spans its loss is taken on."""

    line: int
    text: str
    trained: tuple[tuple[int, int], ...]
    special_tokens: bool  # add the tokenizer's own begin/end tokens (a template adds its own)


@dataclass(frozen=True)
class PackedCorpus:
    """Both splits packed into rows of (seq_len + 1) token ids and labels."""

    train: np.ndarray
    train_labels: np.ndarray
    val: np.ndarray
    val_labels: np.ndarray
    meta: dict[str, Any]


def is_jsonl(data: str) -> bool:
    return data.lower().endswith(JSONL_SUFFIX)


# ------------------------------------------------------------------ reading
def read_examples(path: Path, tokenizer: Any) -> list[Example]:
    """Every line of the file as an Example.

    Raises:
        InputError: a line is not JSON, not an object of one of the three forms, or a chat
            the template cannot render; the message names the line.
    """
    examples = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path} line {number}: not JSON ({error.msg})") from None
            examples.append(_example(record, tokenizer, f"{path} line {number}", number))
    if len(examples) < 2:
        raise InputError(f"{path} holds {len(examples)} example(s): training and validation need 2 or more")
    return examples


def _example(record: Any, tokenizer: Any, where: str, line: int) -> Example:
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected an object with messages, prompt and completion, or text")
    if "messages" in record:
        text, spans = render_chat(_messages(record["messages"], where), tokenizer, where)
        return Example(line, text, spans, special_tokens=False)
    end = tokenizer.eos_token or ""
    if "prompt" in record or "completion" in record:
        prompt, completion = _string(record, "prompt", where), _string(record, "completion", where)
        return Example(line, prompt + completion + end, ((len(prompt), len(prompt + completion + end)),), True)
    if "text" in record:
        text = _string(record, "text", where) + end
        return Example(line, text, ((0, len(text)),), True)
    raise InputError(f"{where}: expected \"messages\", \"prompt\" and \"completion\", or \"text\" "
                     f"(got {', '.join(sorted(record)) or 'no keys'})")


def _string(record: dict[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise InputError(f"{where}: \"{key}\" must be a string")
    return value


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: \"messages\" must be a non-empty list")
    for index, message in enumerate(value):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise InputError(f"{where}: message {index + 1} needs a \"role\" and a \"content\" string")
        if message["role"] not in ROLES:
            raise InputError(f"{where}: message {index + 1} has role {message['role']!r}; "
                             f"roles are {', '.join(ROLES)}")
    if not any(message["role"] == "assistant" for message in value):
        raise InputError(f"{where}: the chat has no assistant message to train on")
    return [{"role": message["role"], "content": message["content"]} for message in value]


def render_chat(messages: list[dict[str, str]], tokenizer: Any, where: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """The chat as the template renders it, and the character span of each assistant turn."""
    def render(part: list[dict[str, str]], prompt: bool) -> str:
        if not part:
            return ""
        return str(tokenizer.apply_chat_template(part, tokenize=False, add_generation_prompt=prompt))

    try:
        whole = render(messages, False)
        spans = []
        for index, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before, through = render(messages[:index], True), render(messages[:index + 1], False)
            if not (whole.startswith(through) and through.startswith(before)):
                raise InputError(f"{where}: the model's chat template does not render turn {index + 1} as a "
                                 "prefix of the whole chat, so its assistant tokens cannot be found")
            spans.append((len(before), len(through)))
    except InputError:
        raise
    except Exception as error:  # the template raises jinja2 errors of its own (e.g. roles out of order)
        raise InputError(f"{where}: the model's chat template refuses this chat: {error}") from None
    return whole, tuple(spans)


# ------------------------------------------------------------------ tokens and labels
def example_tokens(example: Example, tokenizer: Any) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and labels (the id where trained, IGNORED elsewhere) of one example."""
    encoded = tokenizer(example.text, add_special_tokens=example.special_tokens, return_offsets_mapping=True)
    ids = np.asarray(encoded["input_ids"], dtype=np.int64)
    offsets = np.asarray(encoded["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    trained = np.zeros(len(ids), dtype=bool)
    for begin, end in example.trained:
        trained |= (offsets[:, 1] > begin) & (offsets[:, 0] < end)  # any of its characters in the span
    return ids, np.where(trained, ids, IGNORED)


def pack(pieces: list[tuple[np.ndarray, np.ndarray]], row_tokens: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate (ids, labels) and cut into rows of `row_tokens`; drop rows with nothing to train."""
    ids = np.concatenate([piece[0] for piece in pieces])
    labels = np.concatenate([piece[1] for piece in pieces])
    rows = -(-len(ids) // row_tokens)
    pad = rows * row_tokens - len(ids)
    ids = np.concatenate([ids, np.full(pad, pad_id, dtype=ids.dtype)]).reshape(rows, row_tokens)
    labels = np.concatenate([labels, np.full(pad, IGNORED, dtype=labels.dtype)]).reshape(rows, row_tokens)
    keep = (labels[:, 1:] != IGNORED).any(axis=1)  # a row's targets are its tokens 1..
    return ids[keep].astype(np.int32), labels[keep].astype(np.int32)


def is_validation(example: Example, threshold: int) -> bool:
    return zlib.crc32(example.text.encode()) % 10_000 < threshold


def pack_file(path: Path, tokenizer: Any, seq_len: int, val_fraction: float, vocab_size: int) -> PackedCorpus:
    """Read, split, tokenize and pack a JSON Lines file (see the module docstring).

    Raises:
        InputError: a bad line, ids past the vocabulary, or a split without a trained row.
    """
    examples = read_examples(path, tokenizer)
    threshold = int(val_fraction * 10_000)
    val = [example for example in examples if is_validation(example, threshold)] or [examples[-1]]
    train = [example for example in examples if example not in val]
    pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    splits = []
    for name, part in (("training", train), ("validation", val)):
        pieces = [example_tokens(example, tokenizer) for example in part]
        highest = max(int(ids.max()) for ids, _ in pieces if len(ids))
        if highest >= vocab_size:
            raise InputError(f"the tokenizer gives id {highest}, past the model's vocabulary of {vocab_size}")
        ids, labels = pack(pieces, seq_len + 1, pad_id)
        if not len(ids):
            raise InputError(f"{path}: its {name} split has no token to train on")
        splits.append((ids, labels, len(part)))
    (train_ids, train_labels, train_count), (val_ids, val_labels, val_count) = splits
    meta = {"source": str(path.resolve()), "files": 1, "tokenizer": str(getattr(tokenizer, "name_or_path", "")),
            "vocab_size": vocab_size, "dtype": "int32", "format": PACKED, "row_tokens": seq_len + 1,
            "train_tokens": int(train_ids.size), "val_tokens": int(val_ids.size),
            "train_examples": train_count, "val_examples": val_count,
            "train_trained_tokens": int((train_labels[:, 1:] != IGNORED).sum()),
            "train_sha256": hashlib.sha256(train_ids.tobytes() + train_labels.tobytes()).hexdigest(),
            "val_sha256": hashlib.sha256(val_ids.tobytes() + val_labels.tobytes()).hexdigest()}
    return PackedCorpus(train_ids, train_labels, val_ids, val_labels, meta)


def load_tokenizer(model_dir: str | None, data: str) -> Any:
    """The model folder's tokenizer (transformers, local files only: nothing is downloaded).

    Raises:
        InputError: no model folder, or no fast tokenizer in it.
    """
    if model_dir is None:
        raise InputError(f"--data {data}: a JSON Lines file needs a model folder with its tokenizer "
                         "(--model DIR with tokenizer.json and tokenizer_config.json)")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except Exception as error:  # transformers raises OSError, ValueError ... for a folder without one
        raise InputError(f"--data {data}: cannot read the tokenizer of {model_dir}: {error}".splitlines()[0]) from None
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(f"--data {data}: the tokenizer of {model_dir} is not a fast tokenizer (tokenizer.json)")
    return tokenizer


# ------------------------------------------------------------------ the run directory
def write_packed_data(directory: Path, corpus: PackedCorpus) -> None:
    from core.training.run_dir import atomic_write_bytes, atomic_write_json

    for name, array in (("train.bin", corpus.train), ("train_labels.bin", corpus.train_labels),
                        ("val.bin", corpus.val), ("val_labels.bin", corpus.val_labels)):
        atomic_write_bytes(directory / name, array.tobytes())
    atomic_write_json(directory / "meta.json", corpus.meta)


class PackedData:
    """A run's packed rows (memory-mapped) and its stateless batch sampler (core.training.data's interface)."""

    def __init__(self, directory: Path, meta: dict[str, Any]):
        self.meta, self.row_tokens = meta, int(meta["row_tokens"])
        self.vocab_size = int(meta["vocab_size"])

        def rows(name: str) -> np.ndarray:
            return np.memmap(directory / name, dtype=np.int32, mode="r").reshape(-1, self.row_tokens)

        self.train, self.train_labels = rows("train.bin"), rows("train_labels.bin")
        self.val, self.val_labels = rows("val.bin"), rows("val_labels.bin")

    def train_batch(self, seed: int, step: int, rows: int, seq_len: int) -> tuple[Any, Any]:
        """Inputs and targets (IGNORED where untrained) of optimizer step `step`."""
        return self._sample(self.train, self.train_labels, np.random.default_rng([seed, step]), rows, seq_len)

    def val_batch(self, seed: int, index: int, rows: int, seq_len: int) -> tuple[Any, Any]:
        return self._sample(self.val, self.val_labels, np.random.default_rng([seed, 1 << 31, index]), rows, seq_len)

    def _sample(self, ids: np.ndarray, labels: np.ndarray, rng: np.random.Generator, rows: int,
                seq_len: int) -> tuple[Any, Any]:
        import torch

        if seq_len + 1 != self.row_tokens:
            raise InputError(f"the data was packed for sequences of {self.row_tokens - 1} tokens, not {seq_len}")
        picks = rng.integers(0, len(ids), size=rows)
        inputs = torch.from_numpy(np.asarray(ids[picks, :-1], dtype=np.int64))
        targets = torch.from_numpy(np.asarray(labels[picks, 1:], dtype=np.int64))
        return inputs, targets


def open_data(directory: Path) -> Any:
    """A run's data: packed rows (a JSON Lines file) or a token stream (text)."""
    from core.training.data import TokenData

    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    return PackedData(directory, meta) if meta.get("format") == PACKED else TokenData(directory)

"""Local Hugging Face weights: a folder with config.json and *.safetensors.

    model.safetensors                        a single file, or
    model.safetensors.index.json + shards    {"weight_map": {tensor name: shard file}}

Everything is checked before a run directory is made, from the files'
headers only (a safetensors file starts with an 8-byte header length and a
JSON header of names, dtypes, shapes and byte offsets): missing config or
weights, an index naming a missing shard, a file shorter than its header
says (truncated), a tensor missing or of another shape than the config
gives. Each stage then reads only its own tensors, one at a time, with
safetensors' `safe_open`, so no process ever holds the whole model.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import InputError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
CONFIG = "config.json"
_HEADER_LIMIT_BYTES = 100 << 20  # safetensors' own limit on a header


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives and what it is (from the file's header)."""

    file: Path
    dtype: str
    shape: tuple[int, ...]


def is_weights_dir(path: Path) -> bool:
    """Whether `path` is a folder that should hold an HF model (a config or safetensors in it)."""
    return path.is_dir() and ((path / CONFIG).exists() or any(path.glob("*.safetensors")))


def read_config(directory: Path) -> dict[str, Any]:
    """The folder's config.json as a dict.

    Raises:
        InputError: no config.json, not JSON, or no model_type.
    """
    path = directory / CONFIG
    if not path.is_file():
        raise InputError(f"{directory} has no {CONFIG}: a model folder needs config.json and *.safetensors")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read {path}: {error}") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not JSON: {error.msg} at line {error.lineno}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise InputError(f"{path} has no 'model_type': not a Hugging Face config")
    return config


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a folder: the index's shards, or the single file.

    Raises:
        InputError: no weights, a broken index, or an index naming a missing shard.
    """
    index = directory / INDEX
    if index.is_file():
        return sorted(set(_index_map(index).values()))
    if (directory / SINGLE).is_file():
        return [directory / SINGLE]
    files = sorted(directory.glob("*.safetensors"))
    if len(files) == 1:
        return files
    if files:
        raise InputError(f"{directory} holds {len(files)} safetensors files but no {INDEX} saying which is which")
    raise InputError(f"{directory} has no weights: no {SINGLE} or {INDEX} with its shards")


def _index_map(index: Path) -> dict[str, Path]:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read {index}: {error}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise InputError(f"{index} has no 'weight_map'")
    result = {}
    for name, shard in weight_map.items():
        path = index.parent / str(shard)
        if not path.is_file():
            raise InputError(f"{index} names shard {shard} (for {name}) but {path} does not exist")
        result[str(name)] = path
    return result


def read_header(path: Path) -> dict[str, TensorEntry]:
    """The tensors a safetensors file holds, checked against its size.

    Raises:
        InputError: unreadable, not safetensors, or truncated.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise InputError(f"{path} is truncated: {size} bytes, not even a safetensors header")
            (length,) = struct.unpack("<Q", head)
            if length > _HEADER_LIMIT_BYTES or 8 + length > size:
                raise InputError(f"{path} is truncated or not safetensors: header of {length} bytes, "
                                 f"file of {size}")
            header = json.loads(handle.read(length))
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{path} is not a safetensors file (its header is not JSON)") from None
    entries: dict[str, TensorEntry] = {}
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        entries[name] = TensorEntry(path, str(info["dtype"]), tuple(int(d) for d in info["shape"]))
        end = max(end, int(info["data_offsets"][1]))
    if 8 + length + end > size:
        raise InputError(f"{path} is truncated: its header needs {8 + length + end} bytes, the file has {size}")
    return entries


def tensor_index(directory: Path) -> dict[str, TensorEntry]:
    """Every tensor of the folder's weights: name -> file, dtype, shape."""
    entries: dict[str, TensorEntry] = {}
    for file in weight_files(directory):
        entries.update(read_header(file))
    return entries


def find_tensor(entries: Mapping[str, Any], name: str) -> str | None:
    """The stored name of parameter `name`: itself, or without the base model's
    prefix (original GPT-2 files say `h.0.attn...` for `transformer.h.0.attn...`)."""
    if name in entries:
        return name
    _, _, short = name.partition(".")
    return short if short and short in entries else None


def missing_tensors(names: Iterable[str], entries: Mapping[str, Any], tied: tuple[str, str] | None) -> list[str]:
    """The names no stored tensor answers to (a tied head may be stored as the embedding)."""
    return [name for name in names if find_tensor(entries, name) is None
            and not (tied is not None and name == tied[1] and find_tensor(entries, tied[0]) is not None)]


def check_weights(expected: Mapping[str, tuple[int, ...]], entries: Mapping[str, TensorEntry],
                  tied: tuple[str, str] | None) -> None:
    """Every expected tensor is stored with its shape (a tied head may be absent).

    Raises:
        InputError: naming the first missing or mis-shaped tensor and its file.
    """
    for name, shape in expected.items():
        stored = find_tensor(entries, name)
        if stored is None and tied is not None and name == tied[1]:
            stored = find_tensor(entries, tied[0])
        if stored is None:
            raise InputError(f"the weights have no tensor {name} (the config's model needs it)")
        entry = entries[stored]
        if entry.shape != tuple(shape):
            raise InputError(f"tensor {stored} in {entry.file} has shape {list(entry.shape)}, "
                             f"the config gives {list(shape)}")


def load_stage_tensors(module: Any, directory: str, tied: tuple[str, str] | None) -> None:
    """Copy this stage's tensors from the safetensors files into `module`, one
    tensor at a time (`tied`: the embedding's and the head's weight names, the
    first read for a tied head stored without its own copy)."""
    import torch
    from safetensors import safe_open

    entries = tensor_index(Path(directory))
    by_file: dict[Path, list[tuple[str, Any]]] = {}
    for name, target in module.state_dict(keep_vars=True).items():
        stored = find_tensor(entries, name)
        if stored is None and tied is not None and name == tied[1]:
            stored = find_tensor(entries, tied[0])
        if stored is None:
            raise InputError(f"the weights in {directory} have no tensor {name}")
        by_file.setdefault(entries[stored].file, []).append((stored, target))
    with torch.no_grad():
        for file, wanted in by_file.items():
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                for stored, target in wanted:
                    tensor = handle.get_tensor(stored)
                    if tuple(tensor.shape) != tuple(target.shape):
                        raise InputError(f"tensor {stored} in {file} has shape {list(tensor.shape)}, "
                                         f"the model needs {list(target.shape)}")
                    target.copy_(tensor)

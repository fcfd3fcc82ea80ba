"""Measure the shipped models once, ahead of the first plan (`main.py cache --warm`, run by install.py).

A plan reads a measured layer graph from the disk cache without importing torch,
and accelerate's baseline places a cached module tree without importing
transformers (core.model.module_tree); what is not cached is measured when first
asked for (importing torch and transformers: seconds). Warming measures what a
plan of a shipped model asks for first: its default sequence, micro-batches of
1 and 2 sequences (a --global-batch plan compares b by these two), training with
and without recompute, and inference, in the default precision.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from core.model.model_spec import resolve_model
from core.model.presets import all_preset_names
from core.planning.setup import TrainingSetup

WARMED_MICRO_BATCHES = (1, 2)
WARMED_MODES = (("train", False), ("train", True), ("infer", False))  # (mode, recompute)


def warm_shipped_models(report: Callable[[str], None] = lambda line: None) -> int:
    """Measure every shipped model's graphs (and keep its module tree); returns how many models.

    Raises:
        InputError: a shipped model cannot be built here (transformers missing).
    """
    import torch

    from core.model.graph import build_layer_graph

    names = all_preset_names()
    for name in names:
        started = time.perf_counter()
        spec = resolve_model(name)
        for mode, recompute in WARMED_MODES:
            for micro_batch in WARMED_MICRO_BATCHES:
                build_layer_graph(spec, TrainingSetup(mode=mode, recompute=recompute, micro_batch_size=micro_batch,
                                                      seq_len=spec.default_seq_len))
        if spec.hf_config_json is not None:
            from core.model.module_tree import placeable_hf_model

            for dtype in (torch.bfloat16, torch.float32):
                placeable_hf_model(spec, dtype)
        report(f"{name}: {time.perf_counter() - started:.1f} s")
    return len(names)

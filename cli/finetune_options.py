"""--finetune and the LoRA options, shared by `plan` and `train` (one definition, one parse)."""

from __future__ import annotations

import argparse
from typing import Any

from cli.numbers import nonnegative_float, positive_float, positive_int

FINETUNE_OPTIONS = ("finetune", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets")


def add_finetune_arguments(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The fine-tuning group. `defaults` False leaves every option None (train: None = not given)."""
    from core.planning.front_door import FINETUNE_METHODS, FineTune

    base = FineTune()
    group = parser.add_argument_group("fine-tuning")
    group.add_argument("--finetune", choices=FINETUNE_METHODS, default=base.method if defaults else None,
                       help="full: every weight trains; lora: adapters on frozen weights; "
                            "qlora: adapters on 4-bit NF4 weights (default full)")
    group.add_argument("--lora-rank", type=positive_int, default=base.lora_rank if defaults else None,
                       help=f"adapter rank r (default {base.lora_rank})")
    group.add_argument("--lora-alpha", type=positive_float, default=base.lora_alpha if defaults else None,
                       help=f"adapter scale alpha; the update is alpha / r (default {base.lora_alpha:g})")
    group.add_argument("--lora-dropout", type=nonnegative_float, default=base.lora_dropout if defaults else None,
                       help=f"dropout on the adapter's input (default {base.lora_dropout:g})")
    group.add_argument("--lora-targets", default=None, metavar="NAME,NAME",
                       help="module names that get adapters, e.g. q_proj,v_proj "
                            "(default: the attention and MLP projections)")


def finetune_from_args(args: argparse.Namespace) -> Any:
    """The FineTune the options ask for (the defaults where one is not given)."""
    from core.planning.front_door import FineTune

    base = FineTune()
    targets = getattr(args, "lora_targets", None)
    return FineTune(
        method=getattr(args, "finetune", None) or base.method,
        lora_rank=_given(args, "lora_rank", base.lora_rank),
        lora_alpha=_given(args, "lora_alpha", base.lora_alpha),
        lora_dropout=_given(args, "lora_dropout", base.lora_dropout),
        lora_targets=tuple(name.strip() for name in targets.split(",") if name.strip()) if targets else (),
    )


def _given(args: argparse.Namespace, name: str, default: Any) -> Any:
    value = getattr(args, name, None)
    return default if value is None else value

"""`main.py train`: train a model with a plan, in the background: a built-in GPT from scratch,
or a Hugging Face model (a preset or config from scratch, a folder with weights fine-tuned).

    python3 main.py train --model gpt-nano --devices "2xcpu:2GiB" --steps 200 --run-dir runs/nano
    python3 main.py train --model runs/tiny-llama --steps 30 --save-hf runs/tiny-llama-tuned
    python3 main.py train --model runs/tiny-llama --finetune lora --data chat.jsonl --steps 30 \
        --save-adapter runs/tiny-llama-lora        adapters that PeftModel.from_pretrained loads
    python3 main.py train --resume runs/nano --steps 300
    python3 main.py train ... --detach           start it and return (follow with `main.py runs`)
    python3 main.py train --devices 4xcpu --data-parallel 2 --zero 3 ...
                                                 2 replicas of a 2-stage pipeline: 4 processes
    python3 main.py train --devices 4xcpu --tensor-parallel 2 ...
                                                 2 stages, each split over 2 processes (Megatron-style)

In the foreground the command follows the run's metrics; Ctrl-C asks the job
to stop (it checkpoints first), a second Ctrl-C leaves it running.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.finetune_options import FINETUNE_OPTIONS, add_finetune_arguments, finetune_from_args
from cli.numbers import (
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    recompute_choice,
    zero_stage,
)
from core.errors import InputError

if TYPE_CHECKING:
    from core.planning.front_door import Plan
    from core.training.launcher import RunStatus

DEFAULT_HF_SEQ_LEN = 1024  # an HF config that states no context length

# Options only a new run takes (argparse leaves them None when not given, so --resume can refuse
# them); what is not given is core.training.new_run's default, as for the app's Start.
_NEW_RUN_OPTIONS = (
    "model", "layers", "d_model", "heads", "devices", "plan", "profile", "engine", "run_dir", "seed", "data",
    "tokenizer", "bpe_vocab", "precision", "optimizer", "micro_batch_size", "seq_len", "micro_batches",
    "schedule", "recompute", "lr", "min_lr", "warmup_steps", "lr_decay_steps", "weight_decay", "grad_clip",
    "eval_interval", "eval_batches", "checkpoint_interval", "keep_checkpoints", "log_interval", "nnodes",
    "node_rank", "rdzv_endpoint", "nproc_per_node", "data_parallel", "zero", "tensor_parallel", *FINETUNE_OPTIONS,
)
# The options that are TrainConfig fields, by their TrainConfig name.
_CONFIG_OPTIONS = {
    "engine": "engine", "seed": "seed", "data": "data", "tokenizer": "tokenizer", "bpe_vocab": "bpe_vocab_size",
    "lr": "learning_rate", "min_lr": "min_learning_rate", "warmup_steps": "warmup_steps",
    "lr_decay_steps": "lr_decay_steps", "weight_decay": "weight_decay", "grad_clip": "grad_clip",
    "eval_interval": "eval_interval", "eval_batches": "eval_batches", "checkpoint_interval": "checkpoint_interval",
    "keep_checkpoints": "keep_checkpoints", "log_interval": "log_interval", "nnodes": "nnodes",
    "node_rank": "node_rank", "rdzv_endpoint": "rdzv_endpoint", "nproc_per_node": "nproc_per_node",
    "tensor_parallel": "tensor_parallel",
}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model or a custom size, and the batch shape (shared with `profile`); the defaults said are
    core.training.config's."""
    from core.planning.front_door import PRECISIONS
    from core.training.launcher import DEFAULT_DEVICES, TrainConfig, default_setup

    setup = default_setup()

    parser.add_argument("--model", help=f"built-in GPT preset (gpt-nano, gpt-micro, gpt2-small ...), default {TrainConfig.model}; "
                        "or an HF preset (llama-3-8b ...), config.json, or a folder with config.json and "
                        "*.safetensors to fine-tune")
    parser.add_argument("--layers", type=positive_int, help="custom GPT: number of blocks")
    parser.add_argument("--d-model", type=positive_int, help="custom GPT: width")
    parser.add_argument("--heads", type=positive_int, help="custom GPT: attention heads")
    parser.add_argument("--devices", help=f'device spec, e.g. "2xcpu:2GiB", "cuda:0,cuda:1" (default {DEFAULT_DEVICES})')
    parser.add_argument("--precision", choices=("auto", *PRECISIONS),
                        help="auto: bf16 where every device is a GPU that supports it, else fp32")
    parser.add_argument("--micro-batch-size", "--micro-batch", type=positive_int, dest="micro_batch_size",
                        help=f"sequences per micro-batch (default {setup.micro_batch_size})")
    parser.add_argument("--seq-len", "--seq", type=positive_int, dest="seq_len",
                        help="tokens per sequence (default: the model's context)")
    parser.add_argument("--micro-batches", type=positive_int, help=f"micro-batches per optimizer step (default {setup.micro_batches})")
    parser.add_argument("--recompute", type=recompute_choice, nargs="?", const=True, metavar="on|off|auto",
                        help="activation checkpointing of every block (bare: on), or auto: the planner decides "
                             "(default auto; a --plan file's decision)")


def register(subparsers: argparse._SubParsersAction) -> None:
    from core.planning.front_door import OPTIMIZERS, SCHEDULES
    from core.training.launcher import ENGINES, TOKENIZERS, TrainConfig, default_setup

    setup, config = default_setup(), TrainConfig()

    parser = subparsers.add_parser("train", help="train a built-in GPT or a Hugging Face model with a plan (background job)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    group = parser.add_argument_group("run")
    group.add_argument("--steps", type=positive_int, help=f"optimizer steps in all (default {config.steps}; on --resume: the new total)")
    group.add_argument("--run-dir", help="new run directory (default runs/MODEL-DATE-TIME)")
    group.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last checkpoint")
    group.add_argument("--detach", action="store_true", help="start the job and return at once")
    group.add_argument("--save-hf", metavar="OUT", help="HF models: when the run ends, save it to this new folder "
                       "(config.json, safetensors shards, index) for AutoModelForCausalLM.from_pretrained")
    group.add_argument("--save-adapter", metavar="OUT", help="--finetune lora|qlora: when the run ends, save the "
                       "adapters to this new folder (adapter_config.json, adapter_model.safetensors) for "
                       "PeftModel.from_pretrained")
    group.add_argument("--engine", choices=ENGINES,
                       help=f"pipeline: a process per stage (torchrun); local: one process (default {config.engine})")
    group.add_argument("--plan", help="plan JSON (main.py plan --json); default: the exact solver's plan")
    group.add_argument("--profile", help="profile JSON (main.py profile): plan with measured speeds")
    group.add_argument("--data-parallel", type=_replicas, metavar="N|auto",
                       help="replicas of every stage, dividing --micro-batches (default: the --plan's, else 1)")
    group.add_argument("--zero", type=zero_stage, metavar="0..3",
                       help="ZeRO stage of the replicas: 0 DDP, 1-2 sharded optimizer state and gradients, "
                            "3 FSDP (default: the --plan's, else 0)")
    group.add_argument("--tensor-parallel", type=positive_int, metavar="T",
                       help="devices each stage of each replica is split over (tensor parallelism, the built-in "
                            "GPT); T divides the devices per replica: --devices 4xcpu --tensor-parallel 2 is "
                            "2 stages x 2 (default: the --plan's, else 1)")
    group.add_argument("--seed", type=nonnegative_int)
    data = parser.add_argument_group("data")
    data.add_argument("--data", help="text file or folder (default: this Python's standard library sources)")
    data.add_argument("--tokenizer", choices=TOKENIZERS,
                      help=f"byte (vocab 256) or a BPE trained here (default {config.tokenizer})")
    data.add_argument("--bpe-vocab", type=positive_int, help=f"BPE vocabulary size (default {config.bpe_vocab_size})")
    optim = parser.add_argument_group("optimizer")
    optim.add_argument("--optimizer", choices=OPTIMIZERS, help=f"default {setup.optimizer}")
    optim.add_argument("--schedule", choices=SCHEDULES, help=f"default {setup.schedule}")
    optim.add_argument("--lr", type=positive_float, help=f"peak learning rate (default {config.learning_rate:g})")
    optim.add_argument("--min-lr", type=nonnegative_float,
                       help=f"final learning rate of the cosine (default {config.min_learning_rate:g})")
    optim.add_argument("--warmup-steps", type=nonnegative_int, help="default: a tenth of the steps, at most 100")
    optim.add_argument("--lr-decay-steps", type=positive_int, help="cosine length (default: --steps)")
    optim.add_argument("--weight-decay", type=nonnegative_float, help=f"AdamW's decoupled weight decay (default {config.weight_decay:g})")
    optim.add_argument("--grad-clip", type=nonnegative_float, help=f"global gradient norm limit, 0 for none (default {config.grad_clip:g})")
    book = parser.add_argument_group("bookkeeping")
    for flag, text in (("--eval-interval", "steps between validations (default: about 10 a run, "
                                           "every 10 to 50 steps; and at the last step)"),
                       ("--eval-batches", f"validation batches (default {config.eval_batches})"),
                       ("--checkpoint-interval", "steps between checkpoints (default: about 4 a run, "
                                                 "at most every 50 steps; and at the last step)"),
                       ("--keep-checkpoints", f"checkpoints kept (default {config.keep_checkpoints})"),
                       ("--log-interval", "steps between log lines (default: about 10 a run, at most every 10)")):
        book.add_argument(flag, type=positive_int, help=text)
    add_finetune_arguments(parser, defaults=False)
    nodes = parser.add_argument_group("several machines (pipeline engine)")
    nodes.add_argument("--nnodes", type=positive_int, help="number of machines (default 1)")
    nodes.add_argument("--node-rank", type=nonnegative_int, help="this machine's rank, 0 to nnodes-1")
    nodes.add_argument("--rdzv-endpoint", help="HOST:PORT of machine 0")
    nodes.add_argument("--nproc-per-node", type=positive_int, help="stages on this machine (default: stages / nnodes)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from core.training.launcher import resume_run, start_run

    save_hf, save_adapter = getattr(args, "save_hf", None), getattr(args, "save_adapter", None)
    if save_hf is not None:
        _check_save_hf(args, save_hf)
    if save_adapter is not None:
        _check_save_adapter(args, save_adapter)
    if args.resume is not None:
        given = [name for name in _NEW_RUN_OPTIONS if getattr(args, name, None) is not None]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise InputError(f"--resume continues a run as it was set up; {flags} cannot change it "
                             "(only --steps and --detach apply)")
        from core.training.launcher import checkpoint_step, latest_checkpoint

        latest = latest_checkpoint(Path(args.resume) / "checkpoints")
        after = checkpoint_step(latest) if latest is not None else 0
        handle = resume_run(args.resume, args.steps)
        print(f"resuming {handle.run_dir} at step {after} (job pid {handle.pid})", flush=True)
    else:
        config, run_dir = build_config(args)
        handle = start_run(config, run_dir, plan=_plan_arg(args), profile_path=getattr(args, "profile", None),
                           emit=lambda line: print(line, flush=True))
        print(f"training {config.model} in {handle.run_dir} (job pid {handle.pid})", flush=True)
        if config.nnodes > 1:
            _print_node_commands(handle.run_dir)
    if args.detach:
        _print_detached_help(handle.run_dir)
        return 0
    code = follow(handle.run_dir, after_step=after if args.resume is not None else 0)
    if code == 0 and save_hf is not None:
        from core.training.launcher import export_run

        print(f"saved the Hugging Face model to {export_run(handle.run_dir, save_hf)}", flush=True)
    if code == 0 and save_adapter is not None:
        from core.training.launcher import export_adapter

        print(f"saved the adapters for PEFT to {export_adapter(handle.run_dir, save_adapter)}", flush=True)
    return code


def _check_save_hf(args: argparse.Namespace, out: str) -> None:
    """--save-hf: an HF model, a run followed to its end, a new output folder (checked before anything starts)."""
    from core.training.launcher import check_output_dir

    if args.detach:
        raise InputError("--save-hf saves when the run ends: leave out --detach")
    check_output_dir(out)
    if args.resume is not None:
        from core.training.run_info import read_run_info

        is_hf = read_run_info(args.resume).is_hf
    else:
        from core.planning.front_door import resolve_model

        is_hf = getattr(args, "model", None) is not None and resolve_model(args.model).gpt is None
    if not is_hf:
        raise InputError("--save-hf saves Hugging Face models; the built-in GPT keeps its own checkpoints")


def _check_save_adapter(args: argparse.Namespace, out: str) -> None:
    """--save-adapter: an HF model fine-tuned with LoRA or QLoRA, followed to its end, a new folder."""
    from core.training.launcher import check_adapter_run, check_output_dir

    if args.detach:
        raise InputError("--save-adapter saves when the run ends: leave out --detach")
    check_output_dir(out, "--save-adapter")
    if args.resume is not None:
        from core.training.launcher import resumed_finetune

        finetune, is_hf = resumed_finetune(args.resume)
    else:
        from core.planning.front_door import resolve_model

        finetune = finetune_from_args(args)
        is_hf = getattr(args, "model", None) is not None and resolve_model(args.model).gpt is None
    check_adapter_run(finetune, is_hf)


def build_model_and_setup(args: argparse.Namespace) -> tuple[str, Any, Any]:
    """(model name, custom size or None, TrainingSetup at the run's precision) from the command line."""
    from core.planning.front_door import AUTO, GPTSize, parse_device_spec
    from core.training.launcher import TrainConfig, default_setup, run_precision

    value: dict[str, Any] = {name: getattr(args, name, None) for name in _NEW_RUN_OPTIONS}
    custom = None
    if any(value[name] is not None for name in ("layers", "d_model", "heads")):
        if None in (value["layers"], value["d_model"], value["heads"]):
            raise InputError("a custom GPT needs --layers, --d-model and --heads")
        custom = GPTSize(layers=value["layers"], d_model=value["d_model"], heads=value["heads"],
                         vocab=256, seq=256)  # byte-level: the tokenizer sets the vocabulary of a run
    model = value["model"] or ("custom" if custom else TrainConfig.model)
    shape: dict[str, Any] = {name: value[name] for name in ("optimizer", "micro_batch_size", "micro_batches", "schedule")
             if value[name] is not None}
    names = [request.name for request in parse_device_spec(_devices(args))]
    setup = replace(default_setup(), **shape, seq_len=value["seq_len"] or _model_context(model, custom),
                    precision=run_precision(value["precision"] or "auto", names),
                    recompute=AUTO if value["recompute"] is None else value["recompute"], finetune=finetune_from_args(args), **_hybrid(args))
    return model, custom, setup


def _plan_arg(args: argparse.Namespace) -> Plan | None:
    """--plan FILE as a Plan (None: the exact solver plans)."""
    from core.training.launcher import read_plan_file

    path = getattr(args, "plan", None)
    return read_plan_file(path) if path is not None else None


def _hybrid(args: argparse.Namespace) -> dict[str, Any]:
    """data_parallel and zero: as given, else the --plan's, else 1 and 0."""
    plan = _plan_arg(args)
    replicas, zero = (plan.data_parallel, plan.zero) if plan is not None else (1, 0)
    given_replicas, given_zero = getattr(args, "data_parallel", None), getattr(args, "zero", None)
    return {"data_parallel": replicas if given_replicas is None else given_replicas,
            "zero": zero if given_zero is None else given_zero}


def _replicas(text: str) -> int | str:
    """--data-parallel: a whole number, else the text as given (the setup rejects it in one line)."""
    return int(text) if text.strip().lstrip("-").isdigit() else text


def build_config(args: argparse.Namespace) -> tuple[Any, Path]:
    """A TrainConfig from the command line (core.training.new_run, as the app's Start), and the run directory."""
    from core.planning.front_door import ModelChoice, host_block, resolve_choice
    from core.training.launcher import new_run_config, spec_run_devices

    model, custom, setup = build_model_and_setup(args)
    choice = ModelChoice.of_size(custom) if custom is not None else ModelChoice.named(model)
    options = {field: getattr(args, name, None) for name, field in _CONFIG_OPTIONS.items()}
    plan = _plan_arg(args)
    if options["tensor_parallel"] is None and plan is not None:
        options["tensor_parallel"] = plan.tensor_parallel  # the --plan's t
    host_shape = host_block(resolve_choice(choice), setup)  # cpu devices at the host's speed on the model's block
    devices = spec_run_devices(_devices(args), setup.precision, host_shape)  # resolved once: the run gets them typed
    config = new_run_config(choice, setup, devices, steps=args.steps, **options)
    run_dir = Path(args.run_dir or f"runs/{model}-{time.strftime('%Y%m%d-%H%M%S')}")
    return config, run_dir


def _devices(args: argparse.Namespace) -> str:
    """--devices as typed (default core.training.config.DEFAULT_DEVICES: the host)."""
    from core.training.launcher import DEFAULT_DEVICES

    return getattr(args, "devices", None) or DEFAULT_DEVICES


def follow(run_dir: Path, after_step: int = 0) -> int:
    """Print the run's progress until it ends; Ctrl-C asks it to stop.

    Steps up to `after_step` (where a resumed run picks up) were printed by the
    run before: they are not said again.
    """
    from core.system.durable import read_json
    from core.training.launcher import MetricsTail, RunPaths, format_row, read_status, stop_run

    print(f"following {run_dir} (Ctrl-C stops the run after a checkpoint)", flush=True)
    every = int(read_json(RunPaths(Path(run_dir)).config, "run config")["config"].get("log_interval", 10))
    tail, stopping, steps = MetricsTail(Path(run_dir) / "metrics.jsonl"), False, 0
    while True:
        try:
            status = read_status(run_dir)
            steps = status.steps or steps
            for row in tail.poll().rows:
                if row["step"] <= after_step:
                    continue
                if row["step"] % every == 0 or "val_loss" in row or row["step"] == steps:
                    print(format_row(row, steps), flush=True)
                for line in row.get("memory_warnings", ()):  # a stage above its predicted memory
                    print(f"warning: {line}", flush=True)
            if status.state != "running":
                return _finish(run_dir, status)
            time.sleep(0.5)
        except KeyboardInterrupt:
            if stopping:
                print(f"\nleft running in the background: python3 main.py runs --stop {run_dir}", flush=True)
                return 130
            stopping = True
            print("\nstopping after this step (Ctrl-C again to leave it running) ...", flush=True)
            stop_run(run_dir)


def _finish(run_dir: Path, status: RunStatus) -> int:
    from core.training.launcher import RunPaths, read_metrics
    from core.training.run_info import (
        format_report,
        format_step_timeline,
        read_run_info,
        read_step_timeline,
        run_report,
    )

    paths = RunPaths(Path(run_dir))
    if paths.report.exists():  # the job wrote its report: the run measured something
        report = run_report(read_run_info(run_dir), read_metrics(paths.metrics))
        print("predicted vs measured, per micro-batch:\n" + format_report(report))
        step = read_step_timeline(run_dir)
        if step is not None:
            print(format_step_timeline(step))
    if status.state == "failed":
        print(f"allot: error: the run failed: {status.error} (see {Path(run_dir) / 'train.log'})",
              file=sys.stderr, flush=True)
        return 1
    print(f"{status.state} at step {status.step}; resume with: python3 main.py train --resume {run_dir} "
          f"--steps N", flush=True)
    return 0


def _print_detached_help(run_dir: Path) -> None:
    print(f"follow:  python3 main.py runs   |   tail -f {run_dir / 'train.log'}\n"
          f"stop:    python3 main.py runs --stop {run_dir}\n"
          f"resume:  python3 main.py train --resume {run_dir} --steps N", flush=True)


def _print_node_commands(run_dir: Path) -> None:
    from core.training.launcher import node_commands

    print("this machine's job runs torchrun as below; each machine runs `main.py train` with its "
          "--node-rank (same --plan), which amounts to:", flush=True)
    for rank, command in enumerate(node_commands(run_dir)):
        print(f"  node {rank}: {command}", flush=True)


def _model_context(model: str, custom: Any) -> int:
    from core.planning.front_door import ModelChoice, resolve_choice

    spec = resolve_choice(ModelChoice.of_size(custom) if custom is not None else ModelChoice.named(model))
    return spec.context_length or DEFAULT_HF_SEQ_LEN

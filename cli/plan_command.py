"""`main.py plan`: the optimal placement of a model (or an explicit problem).

    python3 main.py plan --model llama-2-7b --devices "A100-80GB:70GiB,RTX4090:22GiB" \
        --mode train --micro-batch 1 --seq 4096 --micro-batches 16
    python3 main.py plan --model llama-2-7b --devices 8xA100-80GB --data-parallel auto --zero 3
    python3 main.py plan --problem problem.json --json

Exit codes: 0 a plan, 1 no placement fits (the reason is printed), 2 bad input.
The explicit-problem path imports no torch, so it answers fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from cli.finetune_options import add_finetune_arguments, finetune_from_args
from cli.numbers import (
    fraction,
    nonnegative_int,
    positive_float,
    positive_int,
    recompute_choice,
    zero_stage,
)
from core.errors import InputError
from core.planning.front_door import (
    EXACT_NAMES,
    MODES,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    SOLVER_CHOICES,
    SOLVER_NAMES,
    TENSOR_PARALLEL_BASELINES,
    TrainingSetup,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plan", help="compute the optimal placement of layers on devices",
                                   description=__doc__.split("\n\n")[0])
    source = parser.add_argument_group("what to place")
    source.add_argument("--model", help="preset (gpt-nano, gpt2-xl, llama-2-7b, ...), hf/NAME, or config.json path")
    source.add_argument("--problem", metavar="FILE.json", help="an explicit problem (layers, devices, setup)")
    source.add_argument("--layers", type=positive_int, help="custom GPT: number of blocks")
    source.add_argument("--d-model", type=positive_int, help="custom GPT: width")
    source.add_argument("--heads", type=positive_int, help="custom GPT: attention heads")
    source.add_argument("--vocab", type=positive_int, default=256, help="custom GPT: vocabulary (default 256, bytes)")
    add_device_arguments(parser)
    add_setup_arguments(parser)
    how = parser.add_argument_group("how")
    how.add_argument("--solver", default="exact", choices=SOLVER_CHOICES,
                     help="default: exact, which is exact-hybrid when the setup asks for data parallelism or ZeRO "
                          "and exact-pipeline otherwise")
    how.add_argument("--time-limit", type=positive_float, default=10.0, metavar="S", help="MILP time limit (default 10 s)")
    how.add_argument("--noncontiguous", action="store_true", help="MILP: allow stages that are not contiguous")
    out = parser.add_argument_group("output")
    how.add_argument("--no-cache", action="store_true",
                     help="measure the model again: neither read nor write the cache of layer graphs")
    out.add_argument("--json", action="store_true", help="print the plan as JSON (docs/design.md's answer format) only")
    out.add_argument("--no-compare", action="store_true", help="skip the side-by-side baselines")
    out.add_argument("--export-problem", metavar="FILE", help="write the explicit problem that was solved")
    out.add_argument("--export", nargs=2, metavar=("FORMAT", "FILE"),
                     help="FORMAT accelerate: a device_map JSON for from_pretrained(device_map=...)")
    parser.set_defaults(run=run)


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("devices")
    group.add_argument("--devices", help='e.g. "A100-80GB:70GiB,2xRTX4090:22GiB", "2xcpu:2GiB", "cuda:0", "auto"')
    group.add_argument("--efficiency", type=fraction, help="fraction of datasheet TFLOP/s reached (default 0.4)")
    group.add_argument("--profile", metavar="FILE", help="measured speeds from `main.py profile` instead of TFLOP/s")
    group.add_argument("--fake-gpus", type=nonnegative_int, default=0, metavar="N",
                       help="discover N fake GPUs instead of NVML (for cuda:N and auto without hardware)")


def add_setup_arguments(parser: argparse.ArgumentParser) -> None:
    """The training setup; its defaults are TrainingSetup's (core/planning/setup.py), its lists the problem's."""
    setup = TrainingSetup()
    group = parser.add_argument_group("training setup")
    group.add_argument("--mode", default=setup.mode, choices=MODES)
    group.add_argument("--precision", default=setup.precision, choices=PRECISIONS, help="bf16 = mixed precision")
    group.add_argument("--optimizer", default=setup.optimizer, choices=OPTIMIZERS)
    group.add_argument("--micro-batch", type=positive_int, default=setup.micro_batch_size,
                       help="sequences per micro-batch")
    group.add_argument("--seq", type=positive_int, help="sequence length (default: the model's context, at most 4096)")
    group.add_argument("--micro-batches", type=positive_int, default=setup.micro_batches,
                       help=f"micro-batches per step (default {setup.micro_batches})")
    group.add_argument("--global-batch", type=positive_int, metavar="N",
                       help="sequences per step: the planner chooses the micro-batch size b and the count m "
                            "(b x m = N, over d replicas) instead of --micro-batch and --micro-batches")
    group.add_argument("--schedule", default="auto", choices=SCHEDULES,
                       help="pipeline schedule, or auto: the fastest, with its chunks per device (default auto)")
    group.add_argument("--recompute", type=recompute_choice, nargs="?", const=True, default="auto",
                       metavar="on|off|auto", help="activation checkpointing of every block (bare: on), or auto: "
                                                   "where it makes the plan fit or faster (default auto)")
    group.add_argument("--data-parallel", default=str(setup.data_parallel), metavar="N|auto",
                       help="replicas of every stage (must divide --micro-batches), or auto: the best "
                            f"(default {setup.data_parallel})")
    group.add_argument("--tensor-parallel", metavar="1|2|4|8|auto",
                       help="devices of one node that split every stage (Megatron-style), or auto: the best "
                            f"(default {setup.tensor_parallel})")
    group.add_argument("--zero", type=zero_stage, default=setup.zero, metavar="0..3",
                       help="ZeRO stage: 1 shards optimizer state, 2 also gradients, 3 also weights (FSDP)")
    add_finetune_arguments(parser, defaults=True)


def run(args: argparse.Namespace) -> int:
    if args.no_cache:
        from core.system.disk_cache import bypassed

        with bypassed():
            return _run(args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    choice = None
    overrides: dict[str, Callable[[], Any]] = {}
    if args.global_batch:
        from cli.plan_global_batch import best_without_tensor_parallelism, plan_global_batch

        choice, spec, options = plan_global_batch(args, solve_problem)
        problem, plan = choice.problem, choice.plan
        if choice.problem.setup.tensor_parallel != 1:  # solved with the comparison, after the answer is out
            overrides = {"exact-t1": lambda: replace(best_without_tensor_parallelism(args, choice, solve_problem),
                                                     solver="exact-t1")}
        model_name = spec.name
    elif args.problem:
        problem, spec, model_name, solved = _explicit_problem(args), None, None, None
    else:
        problem, spec, solved = _model_problem(args)
        model_name = spec.name
    if args.export_problem:
        _write_json(args.export_problem, problem.to_dict())
    from core.planning.front_door import compare

    if choice is None:
        plan, options, recompute_line = solved if solved is not None else (*solve_problem(problem, args, spec), None)
    plan = replace(plan, recompute=problem.setup.recompute)  # what the plan assumed, for `train --plan FILE`
    if args.export:
        _export(args.export, spec, plan, problem)
    if args.json:
        answer = plan.to_dict()
        if problem.has_adapters or not args.problem:  # what was trained (docs/design.md, "Fine-tuning")
            answer["finetune"] = finetune_from_args(args).to_dict() if not args.problem else {
                "method": problem.setup.finetune}
        print(json.dumps(answer, indent=2))
        return 0 if plan.feasible else 1
    if choice is not None:
        from cli.plan_global_batch import choice_lines

        recompute_line = choice_lines(choice, args.global_batch)
    _print_report(problem, plan, spec, model_name, compare if not args.no_compare else None, args, options, overrides,
                  recompute_line)
    return 0 if plan.feasible else 1


def solve_problem(problem: Any, args: argparse.Namespace, spec: Any, chunked: bool = True) -> tuple[Any, Any]:
    """The plan `plan` prints for a problem, with the schedule options it compared (None unless auto;
    `chunked` False: without the chunked schedules, as the micro-batch search ranks each b)."""
    from core.planning.front_door import (
        best_schedule,
        place_accelerate_in_background,
        schedule_options,
        solve,
    )

    if not args.json and not args.no_compare:  # the comparison's accelerate row, meanwhile
        place_accelerate_in_background(problem, spec)
    options = None
    if args.solver == "exact" and problem.setup.schedule == "auto":
        options = schedule_options(problem, chunked)
        plan = best_schedule(options)
    else:
        plan = solve(problem, args.solver, spec=spec, time_limit_s=args.time_limit, contiguous=not args.noncontiguous)
    if plan.schedule is None:
        plan = replace(plan, schedule=problem.setup.pipeline_schedule.name)
    return plan, options


def speed_sources(problem: Any, args: argparse.Namespace, spec: Any) -> str:
    """Where the TFLOP/s above come from: the profile for the devices it measured, the
    datasheet or the host's measured figure (on the model's block, in the plan's precision) x
    efficiency for the others."""
    from core.devices.inventory import load_catalog

    devices = list(problem.devices)
    parts = []
    if args.profile:
        from core.training.launcher import load_profile, profiled_names

        measured = set(profiled_names(devices, load_profile(args.profile)))
        if measured:
            which = "" if len(measured) == len(devices) else f"{', '.join(d.name for d in devices if d.name in measured)} "
            parts.append(f"{which}measured layer by layer (profile {args.profile})")
        devices = [device for device in devices if device.name not in measured]
    catalog = load_catalog()
    if any(device.kind != "cpu" for device in devices):
        efficiency = args.efficiency if args.efficiency is not None else catalog.default_efficiency
        parts.append(f"GPUs datasheet dense TFLOP/s ({args.precision}) x efficiency {efficiency:g}"
                     + (" (the profile measured none of them)" if args.profile else ""))
    if any(device.kind == "cpu" for device in devices):
        from core.devices.inventory import host_speed
        from core.planning.front_door import host_block

        setup = setup_from_args(args, spec)
        speed = host_speed(setup.precision, host_block(spec, setup))
        parts.append(f"cpu {speed.peak_tflops:.3g} TFLOP/s {speed.source} x efficiency {catalog.cpu_efficiency:g}")
    return "speeds: " + "; ".join(parts)


def _explicit_problem(args: argparse.Namespace) -> Any:
    from core.planning.front_door import load_problem

    if args.model or args.devices or args.layers:
        raise InputError("--problem already holds layers and devices: give no --model, --layers or --devices")
    if args.finetune != "full":
        raise InputError("--problem already holds its layers' costs (frozen_bytes, work_flops for LoRA/QLoRA): "
                         "give no --finetune")
    problem = load_problem(args.problem)
    if args.data_parallel != "1" or args.zero != 0:  # the command line overrides the file's setup
        setup = replace(problem.setup, data_parallel=data_parallel_from_arg(args.data_parallel), zero=args.zero)
        problem = replace(problem, setup=setup)
    if args.tensor_parallel is not None:  # the command line overrides the file's t
        problem = replace(problem, setup=replace(problem.setup, tensor_parallel=tensor_parallel_from_arg(
            args.tensor_parallel)))
    return problem


def _model_problem(args: argparse.Namespace) -> tuple[Any, Any, tuple[Any, Any, str | None]]:
    """(the problem, the model spec, and its plan, schedule options and, under recompute auto, the
    line saying why recompute is on or off)."""
    from core.planning.front_door import (
        build_problem,
        host_block,
        plan_with_recompute,
        resolve_devices,
    )

    spec = model_spec_from_args(args)
    setup = setup_from_args(args, spec)
    if not args.devices:
        raise InputError('no devices: give --devices (e.g. "2xA100-80GB" or "cpu") or --problem')
    devices = resolve_devices(args.devices, setup.precision, args.efficiency, discover=_discover_for(args),
                              host_shape=host_block(spec, setup))
    profile = None
    if args.profile:
        from core.training.launcher import apply_profile, load_profile

        profile = load_profile(args.profile)
        devices = apply_profile(devices, profile)

    def build(recompute: bool) -> Any:
        problem = build_problem(spec, replace(setup, recompute=recompute), devices)
        if profile is None:
            return problem
        from core.training.launcher import profile_layer_times

        return replace(problem, layer_times=profile_layer_times(problem, profile))

    options: dict[int, Any] = {}

    def solve(problem: Any) -> Any:
        plan, options[id(problem)] = solve_problem(problem, args, spec)
        return plan

    problem, plan, why = plan_with_recompute(setup, build, solve)
    return problem, spec, (plan, options[id(problem)], why)


def _discover_for(args: argparse.Namespace) -> Any:
    """Device discovery for cuda:N / auto: fake GPUs when asked, else NVML."""
    if not getattr(args, "fake_gpus", 0):
        return None
    from core.devices.inventory import discover, fake_gateway

    gateway = fake_gateway(args.fake_gpus)
    return lambda: discover(gateway)


def model_spec_from_args(args: argparse.Namespace) -> Any:
    """The model named by --model, or a custom GPT from --layers/--d-model/--heads."""
    from core.planning.front_door import GPTSize, ModelChoice, resolve_choice, resolve_model

    if args.layers or args.d_model or args.heads:
        if args.model and args.model != "custom":
            raise InputError("give either --model or custom sizes (--layers/--d-model/--heads), not both")
        if not (args.layers and args.d_model and args.heads):
            raise InputError("a custom GPT needs --layers, --d-model and --heads")
        size = GPTSize(args.layers, args.d_model, args.heads, args.vocab, args.seq or 256)
        return resolve_choice(ModelChoice.of_size(size))
    return resolve_model(args.model)


def setup_from_args(args: argparse.Namespace, spec: Any) -> Any:
    from core.planning.front_door import TrainingSetup

    seq = args.seq or spec.default_seq_len
    return TrainingSetup(mode=args.mode, precision=args.precision, optimizer=args.optimizer,
                         micro_batch_size=args.micro_batch, seq_len=seq, micro_batches=args.micro_batches,
                         schedule=args.schedule, recompute=args.recompute,
                         data_parallel=data_parallel_from_arg(getattr(args, "data_parallel", "1")),
                         zero=getattr(args, "zero", 0), finetune=finetune_from_args(args),
                         tensor_parallel=tensor_parallel_from_arg(getattr(args, "tensor_parallel", None) or "1"))


def data_parallel_from_arg(value: str) -> int | str:
    """--data-parallel: a whole number or "auto" (checked further by TrainingSetup)."""
    return _count_or_auto(value, "--data-parallel must be a whole number or auto")


def tensor_parallel_from_arg(value: str) -> int | str:
    """--tensor-parallel: 1, 2, 4, 8 or "auto" (checked further by TrainingSetup)."""
    return _count_or_auto(value, "--tensor-parallel must be 1, 2, 4, 8 or auto")


def _count_or_auto(value: str, rule: str) -> int | str:
    from core.planning.front_door import AUTO

    if value == AUTO:
        return AUTO
    try:
        return int(value)
    except ValueError:
        raise InputError(f"{rule}, got {value!r}") from None


def _export(export: list[str], spec: Any, plan: Any, problem: Any) -> None:
    kind, path = export
    if kind != "accelerate":
        raise InputError(f"unknown export format '{kind}' (use: accelerate)")
    if spec is None:
        raise InputError("--export accelerate needs a model (--model), not an explicit problem")
    from core.planning.front_door import export_device_map

    _write_json(path, export_device_map(spec, plan, problem))


def _write_json(path: str, data: dict[str, Any]) -> None:
    from core.system.durable import atomic_write_text

    try:
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror}") from None


def _print_report(problem: Any, plan: Any, spec: Any, model_name: str | None, compare: Any,
                  args: argparse.Namespace, schedules: Any = None,
                  overrides: dict[str, Callable[[], Any]] | None = None, decisions: str | None = None) -> None:
    """The report, the answer first (a terminal shows it while the comparison is solved); `overrides`
    make a compared solver's plan (exact-t1: the best over every b); `decisions` why recompute auto
    decided as it did, or the micro-batch size chosen."""
    from cli.plan_report import (
        comparison_table,
        describe_problem,
        faster_baseline_line,
        stage_table,
        summary,
    )
    from core.planning.front_door import faster_outside_the_setup, host_stage_note, solver_label

    print(describe_problem(problem, model_name))
    if not args.problem:
        print(speed_sources(problem, args, spec))
    print()
    if plan.stages:
        print(stage_table(plan))
        print()
    print(summary(plan))
    if decisions:
        print(decisions)
    note = host_stage_note(plan, problem)
    if note:
        print(note)
    if schedules is not None:
        from cli.schedule_report import schedule_table

        print()
        print(schedule_table(schedules, plan))
    if compare is not None:
        exact = args.solver in EXACT_NAMES
        names = SOLVER_NAMES + (TENSOR_PARALLEL_BASELINES if problem.setup.tensor_parallel != 1 else ())
        others = [name for name in names if name != args.solver and not (exact and name in EXACT_NAMES)
                  and name not in (overrides or {})]
        sys.stdout.flush()
        results = {args.solver: plan, **compare(problem, spec, tuple(others), args.time_limit),
                   **{name: make() for name, make in (overrides or {}).items()}}
        reference = plan if exact else None
        print()
        print(comparison_table({solver_label(name, problem.setup.finetune): answer
                                for name, answer in results.items()}, reference))
        faster = faster_outside_the_setup(results, plan, problem.setup) if reference is not None else None
        if faster is not None:
            print(faster_baseline_line(faster, problem.setup))
    sys.stdout.flush()

"""`plan --global-batch N`: the micro-batch size b and count m chosen by the planner
(core/planning/global_batch.py; docs/design.md, "The micro-batch size as a decision")."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from core.errors import InputError


def plan_global_batch(args: argparse.Namespace, solve_problem: Callable[..., tuple[Any, Any]],
                      chunked: bool = True) -> tuple[Any, Any, Any]:
    """(the BatchChoice, the model spec, the chosen plan's schedule options) for --global-batch
    (`chunked` False: GPipe and 1F1B only, the exact solver's).

    Raises:
        InputError: with --problem (its micro-batch is fixed), with --micro-batch or --micro-batches
            set, or when no b leaves a micro-batch count that the replicas divide.
    """
    from cli.plan_command import _discover_for, model_spec_from_args, setup_from_args
    from core.planning.front_door import (
        AUTO,
        TrainingSetup,
        build_problem,
        choose_micro_batch,
        graph_is_measured,
        host_block,
        resolve_devices,
        scaled_problem,
        speeds_at,
    )

    if args.problem:
        raise InputError("--global-batch plans a --model: an explicit problem fixes its micro-batch")
    if args.recompute == AUTO:
        return _recompute_where_needed(args, solve_problem, chunked)
    default = TrainingSetup()
    if args.micro_batch != default.micro_batch_size or args.micro_batches != default.micro_batches:
        raise InputError("give --global-batch or --micro-batch/--micro-batches, not both: "
                         "with --global-batch the planner chooses them")
    if not args.devices:
        raise InputError('no devices: give --devices (e.g. "2xA100-80GB" or "cpu")')
    spec = model_spec_from_args(args)
    base = setup_from_args(args, spec)
    replicas = base.data_parallel if isinstance(base.data_parallel, int) else 1
    host_shape = host_block(spec, base)  # cpu devices timed at b = 1's block: their speed's anchor
    devices = resolve_devices(args.devices, base.precision, args.efficiency, discover=_discover_for(args),
                              host_shape=host_shape)
    measured_tokens = {device.name: host_shape.rows for device in devices if device.kind == "cpu"}
    if args.profile:
        from core.training.launcher import apply_profile, load_profile, profiled_names

        profile = load_profile(args.profile)
        devices = apply_profile(devices, profile)
        tokens = profile.setup.get("micro_batch_size", 1) * profile.setup.get("seq_len", base.seq_len)
        measured_tokens.update({name: tokens for name in profiled_names(devices, profile)})
    options: dict[int | None, Any] = {}

    def build(b: int, m: int) -> Any:
        setup = replace(base, micro_batch_size=b, micro_batches=m)
        return build_problem(spec, setup, speeds_at(devices, b * base.seq_len, measured_tokens))

    def estimate(b: int, m: int) -> Any:
        """A lower-bound problem for a b not measured yet, from b = 1 and 2 (core/planning/global_batch.py)."""
        if b <= 2 or graph_is_measured(spec, replace(base, micro_batch_size=b), devices):
            return None
        return scaled_problem(build(1, replicas), build(2, replicas), replace(build_at_one(b), setup=replace(
            build_at_one(b).setup, micro_batches=m, tokens_per_micro_batch=b * base.seq_len)))

    def build_at_one(b: int) -> Any:
        """b = 1's layers on the devices at b's speed (the setup is replaced by the caller)."""
        one = build(1, replicas)
        return replace(one, devices=speeds_at(devices, b * base.seq_len, measured_tokens))

    def solve(problem: Any, chunked: bool = False) -> Any:
        plan, options[problem.setup.tokens_per_micro_batch] = solve_problem(problem, args, spec, chunked)
        return plan

    # Each b is ranked under GPipe and 1F1B (exact, milliseconds); the chunked schedules, whose search
    # takes a tenth of a second or more a schedule and d, are searched at the chosen b (docs/design.md,
    # "The micro-batch size as a decision").
    choice = choose_micro_batch(args.global_batch, build, solve, replicas=replicas, estimate=estimate)
    best = solve(choice.problem, chunked)  # and the schedules the chosen b deferred, with their reasons
    if best.feasible:  # every schedule at the chosen b: at least as fast as the b's ranking plan
        choice = replace(choice, plan=replace(best, micro_batch=choice.micro_batch))
    return choice, spec, options[choice.problem.setup.tokens_per_micro_batch]


def _recompute_where_needed(args: argparse.Namespace, solve_problem: Callable[..., tuple[Any, Any]],
                            chunked: bool) -> tuple[Any, Any, Any]:
    """Recompute auto under --global-batch: off where some micro-batch size fits without it, else on
    (docs/design.md, "Recompute as a decision": a smaller b is the cheaper way to fit)."""
    answers = []
    for recompute in (False, True):
        choice, spec, options = plan_global_batch(argparse.Namespace(**{**vars(args), "recompute": recompute}),
                                                  solve_problem, chunked)
        answers.append((replace(choice, plan=replace(choice.plan, recompute=recompute)), spec, options))
        if choice.plan.feasible:
            break
    return answers[-1]


def best_without_tensor_parallelism(args: argparse.Namespace, choice: Any,
                                    solve_problem: Callable[..., tuple[Any, Any]]) -> Any:
    """The exact solver's best plan with t = 1 over every b (the comparison's exact-t1 under
    --global-batch: GPipe and 1F1B), found as the choice was (the graphs are cached by then), or None
    when the setup asked for t = 1."""
    if choice.problem.setup.tensor_parallel == 1:
        return None
    one = argparse.Namespace(**{**vars(args), "tensor_parallel": "1"})
    without, _, _ = plan_global_batch(one, solve_problem, chunked=False)
    return without.plan


def choice_lines(choice: Any, global_batch: int) -> str:
    """b, m and d as chosen, and the step time of every b tried."""
    plan = choice.plan
    d = plan.data_parallel
    per_replica = plan.micro_batches // d
    tried = ", ".join(f"{b}: does not fit" if step is None else f"{b}: >= {step:.4g} s (bound, not measured)"
                      if b in choice.bounded else f"{b}: {step:.4g} s" for b, step in choice.tried)
    recompute = "" if plan.recompute is None else (
        "\nrecompute: on (auto: no micro-batch size fits without it)" if plan.recompute
        else "\nrecompute: off (auto: a micro-batch size fits without it)")
    return (f"micro-batch: b = {choice.micro_batch} sequences x m = {per_replica} micro-batches a replica x "
            f"d = {d} replicas = {global_batch} sequences; t = {plan.tensor_parallel} devices a stage "
            f"(step time by b: {tried}){recompute}")

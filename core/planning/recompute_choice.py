"""Activation recompute as a decision (docs/design.md, "Recompute as a decision").

Recompute (activation checkpointing of every block) trades work for memory:
each block keeps only its input and runs its forward again in backward. It
changes every layer's measured activations and working memory, so the two
choices are two problems, each solved exactly; `auto` answers with the
better plan: the faster of the two that fit, without recompute where they
tie, and where neither fits, the one with recompute (it needs the least, so
its shortfall is what the devices lack at best).

The problem with recompute is built only where it could win: that plan must
not fit, or memory must bind it (the same problem with no memory limit has a
faster optimum), and the lower bound with recompute (perfect balance of its
work, which recompute only adds to) must be below it. So a model that fits
without recompute is usually measured once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from core.planning.costs import lower_bound_s
from core.planning.plan import OPTIMAL, Plan
from core.planning.problem import AUTO, Problem
from core.planning.setup import TrainingSetup
from core.units import format_seconds


def plan_with_recompute(setup: TrainingSetup, problem_for: Callable[[bool], Problem],
                        solve: Callable[[Problem], Plan]) -> tuple[Problem, Plan, str | None]:
    """The problem and plan for a setup, the plan carrying its `recompute`: the setup's where it says
    on or off, else the decision of choose_recompute with the line saying why (None otherwise)."""
    if setup.recompute != AUTO:
        problem = problem_for(setup.recomputes)
        return problem, replace(solve(problem), recompute=problem.setup.recompute), None
    return choose_recompute(problem_for, solve)


def choose_recompute(problem_for: Callable[[bool], Problem],
                     solve: Callable[[Problem], Plan]) -> tuple[Problem, Plan, str]:
    """The problem and plan `auto` answers with (the plan carrying its `recompute` decision), and a
    line saying why.

    `problem_for(recompute)` builds the problem (measuring the model's graph
    for that choice); `solve` plans one problem."""
    without = problem_for(False)
    plan_without = replace(solve(without), recompute=False)
    if without.setup.mode == "infer":
        return without, plan_without, "recompute: off (inference keeps no activations for a backward)"
    bound = lower_bound_s(replace(without, setup=replace(without.setup, recompute=True)))
    if plan_without.feasible and plan_without.objective_s is not None and bound >= plan_without.objective_s:
        return without, plan_without, (f"recompute: off (auto: the plan without it, {_s(plan_without)}, is "
                                       f"already at or under the bound with it, {format_seconds(bound)})")
    if plan_without.feasible and _memory_does_not_bind(without, plan_without, solve):
        return without, plan_without, (f"recompute: off (auto: the plan without it, {_s(plan_without)}, is the "
                                       "fastest even with no memory limit, and recompute only adds work)")
    with_recompute = problem_for(True)
    plan_with = replace(solve(with_recompute), recompute=True)
    if plan_with.feasible and not plan_without.feasible:
        return with_recompute, plan_with, f"recompute: on (auto: without it {_why_not(plan_without)})"
    if plan_with.feasible and _faster(plan_with, plan_without):
        return with_recompute, plan_with, (f"recompute: on (auto: {_s(plan_with)} with it, "
                                           f"{_s(plan_without)} without)")
    if not plan_without.feasible:
        return with_recompute, plan_with, "recompute: on (auto: nothing fits without it either)"
    return without, plan_without, (f"recompute: off (auto: {_s(plan_without)} without it, "
                                   f"{_s(plan_with)} with)")


# Two optima of the same placements whose step times differ in the last bits only are a tie.
_TIE = 1e-9
_NO_LIMIT_BYTES = 2**50  # a pebibyte: more than any stage needs, and a finite bound for the MILP


def _memory_does_not_bind(problem: Problem, plan: Plan, solve: Callable[[Problem], Plan]) -> bool:
    """Whether `plan` is as fast as the proven optimum of `problem` with every budget lifted: then no
    plan with recompute can be faster, since each of its placements takes at least as long as the same
    placement without recompute (docs/design.md, "Recompute as a decision")."""
    unlimited = replace(problem, devices=tuple(replace(d, budget_bytes=_NO_LIMIT_BYTES) for d in problem.devices))
    free = solve(unlimited)
    return (free.status == OPTIMAL and free.objective_s is not None and plan.objective_s is not None
            and plan.objective_s <= free.objective_s * (1 + _TIE))


def _why_not(plan: Plan) -> str:
    reason = plan.reason or "no placement fits"
    return reason[0].lower() + reason[1:]


def _s(plan: Plan) -> str:
    return "does not fit" if plan.objective_s is None or not plan.feasible else format_seconds(plan.objective_s)


def _faster(plan: Plan, other: Plan) -> bool:
    return plan.objective_s is not None and (other.objective_s is None or plan.objective_s < other.objective_s)

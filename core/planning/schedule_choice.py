"""The schedule as a decision: every schedule's best plan, and the fastest of them.

`--schedule auto` solves the problem under each schedule of
core.planning.schedules.SCHEDULES (GPipe and 1F1B with the exact or hybrid
solver, the chunked ones with core.planning.chunked, which also picks v and each
chunk's layers) and keeps the least step time; ties keep the earlier schedule, so
1F1B stays where nothing beats it. A named chunked schedule is solved alone
(docs/design.md, "Chunked schedules").
"""

from __future__ import annotations

from dataclasses import replace

from core.errors import InputError
from core.planning.plan import Plan
from core.planning.problem import AUTO, Problem
from core.planning.schedules import AUTO_SCHEDULE, SCHEDULE_NAMES, schedule_named

Options = dict[str, Plan | str]  # schedule name -> its best plan, or why it cannot run


def solve_schedule(problem: Problem) -> Plan:
    """The plan for the setup's schedule; under "auto" the fastest over all schedules."""
    if problem.setup.schedule != AUTO_SCHEDULE:
        return _solve_one(problem, problem.setup.schedule)
    return best_schedule(schedule_options(problem))


def schedule_options(problem: Problem, chunked: bool = True) -> Options:
    """Every schedule's best plan for the problem, or why the schedule cannot run it (`chunked`
    False: GPipe and 1F1B alone, whose solvers are exact and fast)."""
    options: Options = {}
    for name in SCHEDULE_NAMES if chunked else [n for n in SCHEDULE_NAMES if not schedule_named(n).chunked]:
        try:
            options[name] = _solve_one(problem, name)
        except InputError as error:
            options[name] = str(error)
    return options


def best_schedule(options: Options) -> Plan:
    """The feasible plan with the least step time (the first on ties); else the first plan."""
    plans = [plan for plan in options.values() if isinstance(plan, Plan)]
    feasible = [plan for plan in plans if plan.feasible and plan.objective_s is not None]
    if feasible:
        return min(feasible, key=lambda plan: plan.objective_s or 0.0)
    if plans:
        return plans[0]
    raise InputError("no schedule can run this problem: " + "; ".join(f"{k}: {v}" for k, v in options.items()))


def _solve_one(problem: Problem, name: str) -> Plan:
    sub = replace(problem, setup=replace(problem.setup, schedule=name))
    if sub.setup.tensor_parallel != 1:  # every t over the same machinery (docs/design.md, "Tensor parallelism")
        from core.planning.tensor_parallel import solve_over_t

        if schedule_named(name).chunked:
            if sub.setup.tensor_parallel != AUTO:
                raise InputError("chunked schedules are planned without tensor parallelism")
            return _solve_one(replace(sub, setup=replace(sub.setup, tensor_parallel=1)), name)
        return solve_over_t(sub, lambda folded: _solve_one(folded, name))
    if schedule_named(name).chunked or (name == "1f1b" and not sub.setup.is_hybrid and sub.is_chain):
        from core.planning.chunked import exact_1f1b, solve_chunked

        return solve_chunked(sub) if schedule_named(name).chunked else replace(exact_1f1b(sub), schedule=name)
    if sub.setup.is_hybrid:
        from core.planning.hybrid import solve_hybrid

        return replace(solve_hybrid(sub), schedule=name)
    from core.planning.exact import solve_exact

    return replace(solve_exact(sub), schedule=name)

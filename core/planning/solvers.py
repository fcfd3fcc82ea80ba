"""Every solver by name, and the side-by-side comparison.

All of them return a Plan evaluated by the one canonical cost model.

Two exact solvers, each named for what it searches (docs/design.md, "The solvers"):

- `exact-pipeline` (core.planning.exact): one replica, one device a stage, no ZeRO
  (cost model v1): the least step time over contiguous stages and device orders;
- `exact-hybrid` (core.planning.hybrid): data-parallel replicas x pipeline stages with
  a ZeRO stage (cost model v2): the least step time over d, stages and device groups.

`exact`, the default and the name the app, the comparison and plan files use, is
the one of the two that the setup needs: exact-hybrid when it asks for data
parallelism or ZeRO, exact-pipeline otherwise. Its plans say "exact".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.errors import InputError
from core.planning.plan import Plan
from core.planning.problem import Problem
from core.planning.schedules import AUTO_SCHEDULE
from core.planning.setup import TrainingSetup

SOLVER_NAMES = ("exact", "milp", "greedy", "accelerate", "uniform", "parameters",
                "fsdp", "ddp", "zero1", "megatron", "pipeline", "device-map")
ADAPTER_BASELINES = ("device-map",)  # compared when the setup fine-tunes with LoRA or QLoRA
ADAPTER_ONLY_NOTE = "compared when fine-tuning with LoRA or QLoRA"
BASELINES = ("greedy", "accelerate", "uniform", "parameters")
HYBRID_BASELINES = ("fsdp", "ddp", "zero1", "megatron", "pipeline")  # compared when the setup is v2
HYBRID_ONLY_NOTE = "compared when the setup has data parallelism or ZeRO"
# compared when the setup asks for tensor parallelism: the best plan without it, and the TP baselines
TENSOR_PARALLEL_BASELINES = ("exact-t1", "megatron-tp", "metis")
TENSOR_PARALLEL_ONLY_NOTE = "compared when the setup has tensor parallelism"
MILP_FULL_ONLY = "the MILP covers full fine-tuning only (no frozen weights or adapters): use --solver exact"
MILP_V1_ONLY = "the MILP covers cost model v1 only (pipelines, d = 1, zero 0): use --solver exact"
EXACT = "exact"  # the exact solver the setup needs (below): the default everywhere
EXACT_PIPELINE = "exact-pipeline"
EXACT_HYBRID = "exact-hybrid"
SOLVER_CHOICES = (*SOLVER_NAMES, EXACT_PIPELINE, EXACT_HYBRID, *TENSOR_PARALLEL_BASELINES)  # what `plan --solver` takes


EXACT_NAMES = (EXACT, EXACT_PIPELINE, EXACT_HYBRID)


def exact_solver_for(setup: Any) -> str:
    """exact-hybrid for a setup with data parallelism or ZeRO (cost model v2), else exact-pipeline."""
    return EXACT_HYBRID if setup.is_hybrid else EXACT_PIPELINE


def solve(problem: Problem, solver: str = "exact", spec: Any = None, time_limit_s: float = 10.0,
          contiguous: bool = True) -> Plan:
    """Solve with one solver by name.

    `spec` (a ModelSpec) is needed only by `accelerate`, which places the real
    model with accelerate.infer_auto_device_map. `time_limit_s` and
    `contiguous` are the MILP's. `exact` is exact-hybrid (replicas x stages,
    core.planning.hybrid) when the setup asks for data parallelism or ZeRO, and
    exact-pipeline (core.planning.exact) otherwise; asked by name, each plans only
    the setups it covers, and its plan carries that name.

    Raises:
        InputError: unknown solver, or one that cannot take this problem.
    """
    if solver in EXACT_NAMES:
        if problem.setup.schedule == AUTO_SCHEDULE or problem.setup.pipeline_schedule.chunked:
            if solver != EXACT:
                raise InputError(f"{solver} plans one GPipe or 1F1B pipeline; --schedule "
                                 f"{problem.setup.schedule} needs --solver exact")
            from core.planning.schedule_choice import solve_schedule

            return solve_schedule(problem)
        return _solve_exact(problem, solver)
    if solver == "milp":
        if problem.setup.is_hybrid:
            raise InputError(MILP_V1_ONLY)
        if problem.has_adapters:
            raise InputError(MILP_FULL_ONLY)
        if problem.setup.tensor_parallel != 1:
            raise InputError("the MILP plans without tensor parallelism: use --solver exact")
        from core.planning.milp import MilpOptions, solve_milp

        return solve_milp(problem, MilpOptions(time_limit_s=time_limit_s, contiguous=contiguous))
    if solver == "accelerate":
        from core.planning.accelerate_baseline import solve_accelerate

        return solve_accelerate(problem, spec)
    from core.planning import baselines, hybrid_baselines

    if solver == "exact-t1":  # the exact plan without tensor parallelism, as `exact` picks its schedule
        from dataclasses import replace

        from core.planning.deferred_reasons import reasons_deferred
        from core.planning.schedule_choice import solve_schedule

        without = replace(problem, setup=replace(problem.setup, tensor_parallel=1))
        with reasons_deferred():  # the schedules it does not keep need no reason
            plan = solve_schedule(without)
        return replace(plan if plan.feasible else solve_schedule(without), solver=solver)
    if solver in hybrid_baselines.REPLICA_ZERO:
        return hybrid_baselines.solve_replicas(problem, solver)
    simple = {"greedy": baselines.solve_greedy, "uniform": baselines.solve_uniform,
              "parameters": baselines.solve_parameters, "megatron": hybrid_baselines.solve_megatron,
              "pipeline": hybrid_baselines.solve_pipeline_only, "device-map": baselines.solve_device_map,
              "megatron-tp": hybrid_baselines.solve_megatron_tp, "metis": hybrid_baselines.solve_metis}
    if solver not in simple:
        raise InputError(f"unknown solver '{solver}' (choose from {', '.join(SOLVER_NAMES)})")
    return simple[solver](problem)


def _solve_exact(problem: Problem, asked: str) -> Plan:
    from dataclasses import replace

    if problem.setup.tensor_parallel != 1:  # each t-fold problem by the same exact solvers
        from core.planning.tensor_parallel import solve_over_t

        return solve_over_t(problem, lambda folded: _solve_exact(folded, asked))
    needed = exact_solver_for(problem.setup)
    if asked not in (EXACT, needed):
        what = ("asks for data-parallel replicas or ZeRO" if needed == EXACT_HYBRID
                else "has no data-parallel replicas or ZeRO")
        raise InputError(f"{asked} cannot plan this setup, which {what}: use --solver {needed} (or exact)")
    if needed == EXACT_HYBRID:
        from core.planning.hybrid import solve_hybrid

        plan = solve_hybrid(problem)
    else:
        from core.planning.exact import solve_exact

        plan = solve_exact(problem)
    return plan if asked == EXACT else replace(plan, solver=asked)


def solver_label(name: str, finetune: str) -> str:
    """A solver as comparisons name it: device-map as what a PEFT user writes, with the method."""
    if name == "device-map":
        return {"lora": "device_map=auto + LoRA", "qlora": "device_map=auto + QLoRA"}.get(finetune, "device_map=auto")
    return name


def compare(problem: Problem, spec: Any = None, solvers: tuple[str, ...] = SOLVER_NAMES,
            time_limit_s: float = 10.0) -> dict[str, Plan | str]:
    """Every solver on one problem: a Plan each, or why one could not run.

    The MILP is left out for chains, where the exact solver is both faster
    and proven; the accelerate baseline needs a model and accelerate. The
    device_map="auto" with adapters (ADAPTER_BASELINES) is left out of full
    fine-tuning problems, and the data-parallel baselines (HYBRID_BASELINES) out of v1 problems,
    whose setup has no replicas to compare against.
    """
    results: dict[str, Plan | str] = {}
    for name in solvers:
        if name == "milp" and problem.is_chain and len(solvers) > 1:
            continue
        if name in HYBRID_BASELINES and not problem.setup.is_hybrid and len(solvers) > 1:
            continue
        if name in ADAPTER_BASELINES and not problem.has_adapters and len(solvers) > 1:
            continue
        if name in TENSOR_PARALLEL_BASELINES and problem.setup.tensor_parallel == 1 and len(solvers) > 1:
            continue
        if name == "accelerate" and spec is None:
            results[name] = "needs a model (explicit problem)"
            continue
        try:
            results[name] = solve(problem, name, spec=spec, time_limit_s=time_limit_s)
        except InputError as error:
            results[name] = str(error)
    return results



@dataclass(frozen=True)
class FasterBaseline:
    """A data-parallel baseline faster than the exact plan, and what the setup ruled out to allow it.

    The exact plan is optimal within the replica count and ZeRO stage asked
    for; fsdp, ddp, zero1 and megatron pick their own, so one of them can be
    faster when the setup excluded its choice. `zero` is the ZeRO stage to
    ask for (None: keep it) and `needs_auto_data_parallel` whether the replica
    count must be left to the planner.
    """

    solver: str
    faster_percent: float
    data_parallel: int
    zero: int | None
    needs_auto_data_parallel: bool


def faster_outside_the_setup(results: dict[str, Plan | str], exact: Plan,
                             setup: TrainingSetup) -> FasterBaseline | None:
    """The fastest baseline that beats `exact` by using what the setup ruled out, or None."""
    if exact.objective_s is None:
        return None
    faster = [plan for plan in results.values()
              if isinstance(plan, Plan) and plan.feasible and plan.objective_s is not None
              and plan.objective_s < exact.objective_s * (1 - 1e-9)]
    if not faster:
        return None
    best = min(faster, key=lambda plan: plan.objective_s or 0.0)
    zero = best.zero if best.zero != setup.zero else None
    needs_auto = setup.data_parallel != "auto" and best.data_parallel != setup.data_parallel
    if zero is None and not needs_auto:
        return None
    percent = (1 - (best.objective_s or 0.0) / exact.objective_s) * 100
    return FasterBaseline(best.solver, percent, best.data_parallel, zero, needs_auto)

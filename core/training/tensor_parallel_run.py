"""A run on tensor-parallel groups (`train --tensor-parallel T`): its plan and the checks before it starts.

The run's devices, in the order given, form groups of t consecutive devices: group g is
devices[g*t .. g*t + t - 1], and its first device stands for it. The planner prices such a run
with cost model v3 (docs/design.md, "Tensor parallelism": core.planning.tensor_parallel) and names
each stage's groups by their first devices; a given --plan with t > 1 names them the same way and
is costed here on the same t-fold problem. One process runs each device
(core.training.engine.tensor_parallel).
"""

from __future__ import annotations

from core.errors import InputError
from core.model.config import GPTConfig
from core.model.hf_source import HFModelSource
from core.planning.plan import Plan
from core.planning.problem import Problem
from core.planning.schedules import schedule_named
from core.planning.tensor_parallel import on_real_devices, t_fold_problem
from core.training.config import TrainConfig
from core.training.engine.tensor_parallel import tensor_parallel_refusal
from core.training.plan_file import Stages, cost_stages


def cost_given_stages(problem: Problem, stages: Stages, t: int) -> Plan:
    """A given plan's stages, each replica's group of t named by its first device, costed on the
    problem's t-fold problem (t = 1: the problem itself) and written back on the real devices.

    Raises:
        InputError: the stages name a device that leads no group of t, or do not fit.
    """
    folded, members = t_fold_problem(problem, t)
    folded_name = {names[0]: name for name, names in members.items()}
    unknown = sorted({device for group, _ in stages for device in group} - set(folded_name))
    if unknown:
        raise InputError(f"the plan names {', '.join(unknown)}, which leads no tensor-parallel group of {t}")
    plan = cost_stages(folded, [(tuple(folded_name[device] for device in group), layers) for group, layers in stages])
    return on_real_devices(plan, members, t, problem)


def check_tensor_parallel_run(config: TrainConfig, model: GPTConfig | HFModelSource) -> None:
    """A run of t > 1 is one the engine can split: the built-in GPT with heads and width divisible
    by t, or an HF model whose transformers tensor-parallel plan the engine runs
    (core.training.engine.hf_tensor_parallel), whole-model training under 1F1B or GPipe on the pipeline
    engine, and devices that divide into groups of t for every replica.

    Raises:
        InputError: one line naming what cannot run and what to change.
    """
    t, setup = config.tensor_parallel, config.setup
    if t == 1:
        return
    devices, replicas = len(config.devices), setup.data_parallel if isinstance(setup.data_parallel, int) else 1
    if devices % (t * replicas):
        per = f" per replica ({devices} / {replicas})" if replicas > 1 else f" ({devices})"
        raise InputError(f"--tensor-parallel {t} must divide the devices{per}: give a multiple of "
                         f"{t * replicas} devices or another --tensor-parallel")
    if config.engine != "pipeline":
        raise InputError("tensor parallelism runs a process per device: use --engine pipeline")
    refusal = tensor_parallel_refusal(model, t)
    if refusal is not None:
        raise InputError(refusal)
    if schedule_named(setup.schedule).chunked:  # auto: checked on the plan (check_plan_tensor_parallel)
        raise InputError("tensor parallelism runs one stage a process: use --schedule 1f1b or gpipe")
    if setup.finetune.adapters:
        raise InputError("tensor parallelism trains whole models: LoRA and QLoRA adapters are not split "
                         "(drop --finetune or --tensor-parallel)")


def check_plan_tensor_parallel(config: TrainConfig, plan: Plan) -> None:
    """A given plan's t is the one asked for, and it runs one stage a process."""
    if plan.tensor_parallel != config.tensor_parallel:
        raise InputError(f"the plan runs tensor-parallel groups of {plan.tensor_parallel} but --tensor-parallel "
                         f"is {config.tensor_parallel}")
    if plan.tensor_parallel > 1 and plan.chunks > 1:
        raise InputError("tensor parallelism runs one stage a process: the plan's chunked schedule cannot")

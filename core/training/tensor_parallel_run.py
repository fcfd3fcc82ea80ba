"""A run on tensor-parallel groups (`train --tensor-parallel T`), until the planner chooses t.

The run's devices, in the order given, form groups of t consecutive devices: group g is
devices[g*t .. g*t + t - 1], and its first device stands for it. `plan_tensor_parallel_run`
plans the pipeline (stages and replicas) over the groups' first devices as any run is planned,
then marks the plan tensor-parallel: each stage of each replica runs on the group of the device
it was planned on, one process per device (core.training.engine.tensor_parallel). The plan's
times and memory are those of one device per stage (the planner's TP cost model, docs/design.md
"Tensor parallelism", is what replaces this function). A given --plan with t > 1 names each
group by its first device in the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from core.errors import InputError
from core.model.config import GPTConfig
from core.planning.plan import Plan
from core.planning.problem import Device
from core.planning.schedules import schedule_named
from core.training.config import TrainConfig
from core.training.engine.tensor_parallel import tensor_parallel_refusal


def group_of(names: Sequence[str], first: str, t: int) -> tuple[str, ...]:
    """The tensor-parallel group whose first device is `first` (the devices in the order given)."""
    start = list(names).index(first)
    if start % t:
        raise ValueError(f"{first} leads no tensor-parallel group of {t}")
    return tuple(names[start:start + t])


def plan_tensor_parallel_run(plan_one: Callable[[tuple[Device, ...]], Plan], devices: Sequence[Device],
                             t: int) -> Plan:
    """The run's plan for t devices a stage: `plan_one` plans over each group's first device,
    and the plan runs each stage on that device's group (t = 1: `plan_one` over every device)."""
    if t == 1:
        return plan_one(tuple(devices))
    return replace(plan_one(tuple(devices[::t])), tensor_parallel=t)


def check_tensor_parallel_run(config: TrainConfig, gpt: GPTConfig | None) -> None:
    """A run of t > 1 is one the engine can split: the built-in GPT (`gpt`; None for an HF model)
    with heads and width divisible by t, whole-model training under 1F1B or GPipe on the pipeline
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
    refusal = tensor_parallel_refusal(gpt, t)
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

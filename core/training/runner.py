"""Preparing runs: every check first, then the run directory.

`prepare_new_run` validates the model, corpus, devices, plan and launch
shape, tokenizes the corpus and plans, all before anything is written, so
bad input leaves no trace; then it writes config.json, plan.json and data/.
The devices come typed in the TrainConfig (core.training.new_run resolved them
once); a given plan's stages are checked against their names and costed once
for the model that runs (its vocabulary is the tokenizer's), on those devices.
`prepare_resume` checks that a run can continue (not running, checkpoint
intact, more steps asked) before it touches the directory.
"""

from __future__ import annotations

import platform
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import InputError
from core.model.config import GPTConfig
from core.model.model_spec import ModelSpec, resolve_choice
from core.planning.plan import Plan
from core.planning.problem import AUTO, Device
from core.planning.schedules import micro_batches_per_replica, schedule_named
from core.training.config import TrainConfig
from core.training.engine import checkpoint as ckpt
from core.training.engine.context import CONFIG_FORMAT, RunContext
from core.training.execution import DeviceExecution
from core.training.metrics import truncate_after
from core.training.plan_file import Stages
from core.training.run_dir import (
    RUNNING,
    RunPaths,
    atomic_write_json,
    check_new_run_dir,
    is_run_dir,
    read_json,
    read_status,
)
from core.training.tensor_parallel_run import (
    check_plan_tensor_parallel,
    check_tensor_parallel_run,
    cost_given_stages,
)

if TYPE_CHECKING:
    from core.training.engine.profile import Profile


def trainable_model(config: TrainConfig, vocab_size: int) -> tuple[str, GPTConfig]:
    """The built-in GPT that runs: the preset or custom size with the tokenizer's
    vocabulary and a position table long enough for the sequence length.

    Raises:
        InputError: the model is an HF config (planned, never trained here).
    """
    spec = resolve_choice(config.model_choice)
    if spec.gpt is None:
        raise InputError(f"{spec.name} is a Hugging Face config: Allot plans it but trains only the built-in "
                         "GPT (gpt-nano, gpt-micro, gpt2-small ... or custom sizes)")
    gpt = replace(spec.gpt, vocab_size=vocab_size, seq_len=max(spec.gpt.seq_len, config.setup.seq_len))
    name = spec.name if vocab_size == spec.gpt.vocab_size else f"{spec.name}-vocab{vocab_size}"
    return name, gpt


def layer_names(gpt: GPTConfig) -> list[str]:
    return ["embed", *(f"h.{i}" for i in range(gpt.n_layer)), "ln_f", "lm_head"]


def prepare_new_run(config: TrainConfig, run_dir: Path | str, plan: Plan | None = None,
                    profile_path: str | None = None, emit: Callable[[str], None] = print) -> RunContext:
    """Validate everything, then create the run directory. Returns the run.

    `plan` gives the stages (device groups and layers) to run on `config.devices`, costed for
    the model that runs; None plans with the exact solver.

    Raises:
        InputError: any bad input; nothing has been written then.
    """
    from core.training.chat_data import (
        PackedCorpus,
        is_jsonl,
        load_tokenizer,
        pack_file,
        write_packed_data,
    )
    from core.training.data import (
        corpus_files,
        corpus_summary,
        load_corpus,
        tokenize_corpus,
        write_token_data,
    )
    from core.training.hf_prepare import (
        check_hf_stages,
        check_tokenizer_choice,
        hf_layer_names,
        hf_source,
        tokenize_for_hf,
    )
    from core.training.plan_file import plan_stages

    root = Path(run_dir).expanduser().resolve()
    check_new_run_dir(root)
    config = config.resolved()
    spec = resolve_choice(config.model_choice)
    hf = hf_source(config, spec)  # None: the built-in GPT; an HF model's weights are checked here
    if hf is None:
        names = layer_names(trainable_model(config, 256)[1])
    else:
        check_tokenizer_choice(config)
        spec = spec.with_context(config.setup.seq_len)
        names = hf_layer_names(hf)
    corpus_files(config.data)  # fails fast for a missing corpus
    _check_lora_targets(config, hf)
    devices = config.devices
    if not devices:
        raise InputError("the run names no devices to train on")
    profile = None
    if profile_path is not None:
        from core.training.engine.profile import apply_profile, load_profile

        profile = load_profile(profile_path)
        devices = apply_profile(devices, profile)
        config = replace(config, devices=devices)  # the run records the speeds it was planned with
    check_tensor_parallel_run(config, trainable_model(config, 256)[1] if hf is None else hf)
    leaders = [d.name for d in devices][::config.tensor_parallel]  # a group is named by its first device
    given = plan_stages(plan, names, leaders) if plan is not None else None
    _check_launch(config, len(given) * len(given[0][0]) * config.tensor_parallel if given is not None else None)
    if plan is not None:
        _check_plan_hybrid(config, plan)
        check_plan_tensor_parallel(config, plan)
    emit(f"reading the corpus ({config.data}) ...")
    model_record: dict[str, Any]
    corpus: Any
    if is_jsonl(config.data):  # fine-tuning examples, packed (core.training.chat_data)
        tokenizer = load_tokenizer(hf.weights_dir if hf is not None else None, config.data)
        assert hf is not None
        corpus = pack_file(Path(config.data).expanduser(), tokenizer, config.setup.seq_len, config.val_fraction,
                           hf.vocab_size)
        model_record = {"name": spec.name, "gpt": None, "hf": hf.record()}
    elif hf is None:
        text = load_corpus(config.data, config.val_fraction)
        corpus = tokenize_corpus(text, config.tokenizer, config.bpe_vocab_size, min_tokens=config.setup.seq_len + 1)
        name, gpt = trainable_model(config, corpus.vocab_size)
        spec = ModelSpec(name=name, gpt=gpt)
        model_record = {"name": name, "gpt": asdict(gpt)}
    else:
        corpus = tokenize_for_hf(load_corpus(config.data, config.val_fraction), hf, config.setup.seq_len + 1, emit)
        model_record = {"name": spec.name, "gpt": None, "hf": hf.record()}
    if plan is not None and config.setup.recompute == AUTO:  # a plan file's decision (off where it has none)
        config = _with_recompute(config, bool(plan.recompute))
    planned = _plan(spec, config, devices, given)
    if config.setup.recompute == AUTO:  # the planner decided: the run records and runs its decision
        config = _with_recompute(config, bool(planned.recompute))
    if hf is not None:
        check_hf_stages(hf, [tuple(names[i] for i in stage.layer_indices) for stage in planned.stages])
    check_plan_tensor_parallel(config, planned)
    _check_stages(config, planned)
    _check_memory(config, planned)
    # ---- every check passed: now, and only now, write
    paths = RunPaths(root)
    root.mkdir(parents=True, exist_ok=True)
    if isinstance(corpus, PackedCorpus):
        write_packed_data(paths.data, corpus)
    else:
        write_token_data(paths.data, corpus)
    atomic_write_json(paths.plan, planned.to_dict())
    record = _config_record(config, model_record, corpus_summary(corpus), plan, profile_path)
    record["execution"] = [item.to_dict() for item in _executions(config, spec, devices, planned, profile)]
    atomic_write_json(paths.config, record)
    return RunContext.load(root)


def _check_lora_targets(config: TrainConfig, hf: Any) -> None:
    """--lora-targets must name linear layers of the model (checked on a model on the meta device)."""
    if not config.setup.finetune.adapters:
        return
    import torch

    from core.model.gpt import GPT
    from core.training.engine.adapters import check_targets
    from core.training.engine.hf_stages import build_meta_model

    if hf is not None:
        model = build_meta_model(hf)
    else:
        with torch.device("meta"):
            model = GPT(trainable_model(config, 256)[1])
    check_targets(model, config.setup.finetune)


def prepare_resume(run_dir: Path | str, steps: int | None = None) -> RunContext:
    """Make a stopped, finished, failed or killed run ready to continue.

    Raises:
        InputError: no run there, it is still running, its latest checkpoint is
            corrupt, or it is already at `steps`; nothing is changed then.
    """
    root = Path(run_dir).expanduser().resolve()
    if not is_run_dir(root):
        raise InputError(f"{root} holds no run (no config.json)")
    paths = RunPaths(root)
    if paths.status.exists():
        status = read_status(root)
        if status.state == RUNNING and status.alive is not False:
            raise InputError(f"run {root} is still running (pid {status.pid}); stop it first "
                             f"(python3 main.py runs --stop {root})")
    context = RunContext.load(root)
    latest = ckpt.latest_checkpoint(paths.checkpoints)
    done = 0
    if latest is not None:
        try:
            ckpt.verify_checkpoint(latest)
        except InputError as error:
            raise InputError(f"{error}; delete that directory to resume from the one before") from None
        done = ckpt.checkpoint_step(latest)
    total = context.config.steps if steps is None else steps
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise InputError(f"steps must be a whole number of 1 or more, got {total!r}")
    if total <= done:
        raise InputError(f"run {root} is already at step {done}: give --steps above it to train on")
    # ---- checks passed: clear the way for the job
    paths.stop_file.unlink(missing_ok=True)
    truncate_after(paths.metrics, done)
    ckpt.remove_partial(paths.checkpoints)
    if total != context.config.steps:
        stored = read_json(paths.config, "run config")
        stored["config"] = context.config.with_steps(total).to_dict()
        atomic_write_json(paths.config, stored)
    return RunContext.load(root)


def _with_recompute(config: TrainConfig, recompute: bool) -> TrainConfig:
    return replace(config, setup=replace(config.setup, recompute=recompute))


def _plan(spec: ModelSpec, config: TrainConfig, devices: tuple[Device, ...], given: Stages | None) -> Plan:
    """The run's plan: the given stages costed, or the planner's (on groups of t devices a stage
    where --tensor-parallel is above 1, cost model v3)."""
    from core.planning.front_door import build_problem, plan_model

    setup = replace(config.setup, tensor_parallel=config.tensor_parallel)
    if given is not None:
        return cost_given_stages(build_problem(spec, setup, devices), given, config.tensor_parallel)
    plan = plan_model(spec, setup, devices, "exact").plan
    if not plan.feasible:
        raise InputError(f"no placement of {spec.name} fits the devices: {plan.reason}")
    return plan


def _executions(config: TrainConfig, spec: ModelSpec, devices: Sequence[Device], plan: Plan,
                profile: Profile | None) -> tuple[DeviceExecution, ...]:
    """What executes each device, and at what speed: simulated GPUs run on the host, whose
    speed is the profile's host measurement or else the host's measured forward and backward of one
    of the model's blocks in the run's precision (cached per machine, docs/design.md "Host speed"),
    shared between the run's processes on this host under the pipeline engine."""
    from core.devices.catalog import load_catalog
    from core.devices.host_speed import host_speed
    from core.planning.device_resolution import host_block
    from core.training.engine.pipeline_launch import processes_on_this_node, threads_per_process
    from core.training.execution import is_simulated, plan_executions

    if not any(is_simulated(device) for device in devices):
        return plan_executions(devices, None, "")
    processes = plan.ranks_per_replica * plan.data_parallel * plan.tensor_parallel
    shares = processes_on_this_node(config, processes) if config.engine == "pipeline" else 1
    split = f", 1/{shares} of the cores (one of {shares} stage processes)" if shares > 1 else ""
    measured = next((entry for entry in profile.devices if entry.name == "cpu"), None) if profile else None
    if measured is not None:
        return plan_executions(devices, measured.effective_tflops * measured.shares / shares,
                               f"the profile's host measurement ({measured.threads} threads){split}")
    # one stage process's own speed: measured with its threads, as it runs beside the others
    shape = host_block(spec, config.setup)
    threads = threads_per_process(shares) if shares > 1 else None
    speed, efficiency = host_speed(config.setup.precision, shape, threads), load_catalog().cpu_efficiency
    crowded = max(1.0, shares * speed.threads / threads_per_process(1))  # more threads than cores: they take turns
    return plan_executions(devices, speed.peak_tflops * efficiency / crowded,
                           f"the host's block, {speed.source}, × efficiency {efficiency:g}{split}")


def _check_launch(config: TrainConfig, processes: int | None) -> None:
    """Several nodes: the pipeline engine, a given plan (`processes` is its size; None: no plan), an endpoint."""
    if config.nnodes == 1:
        return
    if config.engine != "pipeline":
        raise InputError("several nodes need --engine pipeline")
    if processes is None:
        raise InputError("several nodes need --plan FILE: every node must run the same plan")
    if not config.rdzv_endpoint:
        raise InputError("several nodes need --rdzv-endpoint HOST:PORT (the address of node 0)")
    if processes is not None and config.nproc_per_node is None and processes % config.nnodes:
        raise InputError(f"{processes} processes do not split evenly over {config.nnodes} nodes: "
                         "give --nproc-per-node for this node")


def _check_stages(config: TrainConfig, plan: Plan) -> None:
    stages = len(plan.stages)
    setup = config.setup
    _check_replicas(config, plan)
    schedule = schedule_named(plan.schedule or setup.schedule)
    if config.engine == "pipeline" and schedule.chunked:
        _check_chunked(config, plan)
        return
    least = schedule.least_micro_batches_per_replica(stages)
    if config.engine == "pipeline" and micro_batches_per_replica(setup.micro_batches, plan.data_parallel) < least:
        replicas = f" per replica ({setup.micro_batches} / {plan.data_parallel})" if plan.data_parallel > 1 else ""
        raise InputError(f"{schedule.label} needs at least as many micro-batches{replicas} as stages ({stages}): "
                         f"use --micro-batches {least * plan.data_parallel} or --schedule gpipe")
    kinds = {device.startswith("cuda:") for stage in plan.stages for device in stage.devices}
    if config.engine == "pipeline" and len(kinds) > 1:
        raise InputError("the pipeline engine cannot mix CPU and GPU stages: use --engine local")


def _check_chunked(config: TrainConfig, plan: Plan) -> None:
    """A chunked schedule runs v chunks a process (built-in GPT or HF stages), each chunk of each
    replica's pipeline FSDP2's own unit with d > 1, as torch allows (core.planning.schedules)."""
    from core.planning.schedules import ChunkedSchedule

    schedule = schedule_named(plan.schedule or config.setup.schedule)
    assert isinstance(schedule, ChunkedSchedule)
    if plan.chunks < 2:
        raise InputError(f"{schedule.label} runs 2 or more chunks per device; the plan has {plan.chunks}: "
                         f"plan it with --schedule {schedule.name}")
    if config.setup.schedule not in ("auto", schedule.name):
        raise InputError(f"the plan is for --schedule {schedule.name}, not {config.setup.schedule}")
    refusal = schedule.refusal(plan.ranks_per_replica, plan.chunks,
                               micro_batches_per_replica(config.setup.micro_batches, plan.data_parallel))
    if refusal is not None:
        raise InputError(refusal)
    kinds = {device.startswith("cuda:") for stage in plan.stages for device in stage.devices}
    if len(kinds) > 1:
        raise InputError("the pipeline engine cannot mix CPU and GPU stages: use --engine local")


def _check_memory(config: TrainConfig, plan: Plan) -> None:
    """Each stage's predicted peak fits what will hold it: the host's available memory, a GPU's free
    memory (core.training.memory_check). Several nodes: each holds its own stages, unchecked here."""
    from core.training.memory_check import memory_shortfall, read_holder_memory

    if config.nnodes > 1:
        return
    shortfall = memory_shortfall(plan, read_holder_memory(plan))
    if shortfall is not None:
        raise InputError(f"the run would run out of memory: {shortfall}")


def _check_plan_hybrid(config: TrainConfig, plan: Plan) -> None:
    """A given plan's replicas and ZeRO stage are the ones asked for."""
    replicas, zero = plan.data_parallel, plan.zero
    asked = config.setup.data_parallel
    if isinstance(asked, int) and replicas != asked:
        raise InputError(f"the plan runs {replicas} data-parallel replicas but --data-parallel is {asked}")
    if zero != config.setup.zero:
        raise InputError(f"the plan runs ZeRO stage {zero} but --zero is {config.setup.zero}")


def _check_replicas(config: TrainConfig, plan: Plan) -> None:
    """A data-parallel plan runs as asked, on the engine and hosts that can run it."""
    asked = config.setup.data_parallel
    if isinstance(asked, int) and plan.data_parallel != asked:
        raise InputError(f"the plan runs {plan.data_parallel} data-parallel replicas but --data-parallel is {asked}")
    if plan.data_parallel == 1:
        return
    if config.engine != "pipeline":
        raise InputError("data-parallel replicas run one process each: use --engine pipeline")


def _config_record(config: TrainConfig, model: dict[str, Any], data: dict[str, Any],
                   plan: Plan | None, profile_path: str | None) -> dict[str, Any]:
    """config.json: the config with its typed devices (serialised once, under "config"), the model,
    the data and where the plan came from."""
    import torch

    return {
        "format": CONFIG_FORMAT,
        "config": config.to_dict(),
        "model": model,
        "data": data,
        "plan_from": f"given ({plan.solver} plan)" if plan is not None else "exact solver",
        "profile": str(Path(profile_path).resolve()) if profile_path else None,
        "created_at": time.time(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }

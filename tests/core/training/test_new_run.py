"""One way to a new run: the CLI's `train` and the app's Start make the same run from the same inputs."""

from dataclasses import replace

import pytest

from cli import build_parser
from cli.train_command import build_config
from core.errors import InputError
from core.model.config import ModelChoice
from core.planning.front_door import plan_model
from core.planning.problem import Device
from core.planning.setup import TrainingSetup
from core.project import simulated_entry
from core.system.durable import read_json
from core.training.app_request import run_devices, train_config
from core.training.new_run import (
    RunDevices,
    default_intervals,
    new_run_config,
    run_precision,
    spec_run_devices,
)
from core.training.run_dir import RunPaths
from core.training.runner import prepare_new_run
from tests.core.training.engine.hf_support import save_model, tiny_llama_config
from tests.core.training.support import write_corpus

HOST = RunDevices("fp32", (Device(name="cpu", budget_bytes=2**31, tflops=0.1, bandwidth_gbps=10.0, kind="cpu"),))


def test_simulated_gpus_and_the_host_train_in_fp32_unless_asked_otherwise():
    assert run_precision("auto", ["A100-80GB", "RTX4090"]) == "fp32"
    assert run_precision("auto", ["cpu", "cpu#2"]) == "fp32"
    assert run_precision("auto", ["cpu", "cuda:0"]) == "fp32"  # not every device is a GPU
    assert run_precision("bf16", ["cpu"]) == "bf16"  # asked for: kept
    assert run_precision("fp32", ["cuda:0"]) == "fp32"
    with pytest.raises(InputError, match="precision must be one of"):
        run_precision("fp16", ["cpu"])
    assert spec_run_devices("A100-80GB:2GiB,RTX4090", "auto").precision == "fp32"


def test_a_short_run_validates_every_ten_steps_and_a_long_one_every_fifty():
    assert default_intervals(30) == {"eval_interval": 10, "checkpoint_interval": 7, "log_interval": 3}
    assert default_intervals(1) == {"eval_interval": 10, "checkpoint_interval": 1, "log_interval": 1}
    assert default_intervals(200) == {"eval_interval": 20, "checkpoint_interval": 50, "log_interval": 10}
    assert default_intervals(10_000) == {"eval_interval": 50, "checkpoint_interval": 50, "log_interval": 10}


def test_given_options_win_and_a_low_peak_learning_rate_lowers_the_floor():
    setup = TrainingSetup(precision="fp32")
    config = new_run_config(ModelChoice.named("gpt-nano"), setup, HOST, steps=30, learning_rate=5e-5,
                            eval_interval=3, seed=None)
    assert (config.eval_interval, config.learning_rate, config.min_learning_rate, config.seed) == (3, 5e-5, 5e-5, 0)
    with pytest.raises(InputError, match="unknown training options: colour"):
        new_run_config(ModelChoice.named("gpt-nano"), setup, HOST, colour="red")
    with pytest.raises(InputError, match="no devices"):
        new_run_config(ModelChoice.named("gpt-nano"), setup, RunDevices("fp32", ()))


def test_the_app_and_the_cli_start_the_same_run_from_the_same_inputs(tmp_path):
    """The app planned in bf16 (its default) on its default simulated GPUs; the CLI gets the
    same model, devices, batch shape and steps. Both runs train fp32 at the same cadence."""
    folder = save_model(tiny_llama_config(), tmp_path / "tiny-llama")
    corpus = write_corpus(tmp_path / "corpus.txt", lines=2000)
    first = simulated_entry("A100-80GB")
    entries = (first, simulated_entry("RTX4090", {first.name}))
    # precision bf16 and recompute auto, as the app's
    setup = TrainingSetup(micro_batch_size=2, seq_len=64, micro_batches=4, recompute="auto")
    choice = ModelChoice(source="config", name=str(folder))
    planned = plan_model(choice, setup, entries).plan
    devices = run_devices(entries, planned, setup.precision)
    app = train_config(choice, setup, devices, 30, "pipeline", str(corpus))
    prepare_new_run(app, tmp_path / "app", planned, emit=lambda line: None)
    spec = ",".join(f"{d.name}:{d.budget_bytes}B" for d in devices.devices)  # the devices the plan uses, typed
    args = build_parser().parse_args(
        ["train", "--model", str(folder), "--devices", spec, "--micro-batch-size", "2", "--seq-len", "64",
         "--micro-batches", "4", "--steps", "30", "--data", str(corpus), "--run-dir", str(tmp_path / "cli")])
    cli, run_dir = build_config(args)
    prepare_new_run(cli, run_dir, None, emit=lambda line: None)
    started = {name: read_json(RunPaths(tmp_path / name).config, "run config")["config"] for name in ("app", "cli")}
    assert started["app"] == started["cli"]
    assert started["app"]["setup"]["precision"] == "fp32"
    assert started["app"]["eval_interval"] == 10
    assert planned.recompute is False and started["app"]["setup"]["recompute"] is False  # the decision, recorded


def test_a_run_given_a_plan_made_with_recompute_runs_with_it(tmp_path):
    """`plan --recompute on` then `train --plan FILE` (recompute auto, the default): the plan's own
    setting is what the run records and runs, not an unchecked default."""
    corpus = write_corpus(tmp_path / "corpus.txt", lines=200)
    setup = TrainingSetup(precision="fp32", micro_batch_size=2, seq_len=32, micro_batches=2, recompute=True)
    planned = plan_model(ModelChoice.named("gpt-nano"), setup, HOST.devices).plan
    assert planned.recompute is True
    config = new_run_config(ModelChoice.named("gpt-nano"), replace(setup, recompute="auto"), HOST, data=str(corpus),
                            steps=2)
    prepare_new_run(config, tmp_path / "run", planned, emit=lambda line: None)
    assert read_json(RunPaths(tmp_path / "run").config, "run config")["config"]["setup"]["recompute"] is True

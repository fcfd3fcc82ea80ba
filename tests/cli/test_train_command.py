"""`main.py train | runs`: bad input is one line and exit code 2, and overwrites nothing."""

import hashlib
import json

import pytest

from core.training.launcher import wait_run
from main import main
from tests.core.training.support import write_corpus, write_plan


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


def tiny_args(corpus, run_dir, *extra):
    return ["train", "--model", "gpt-nano", "--devices", "2xcpu:1GiB", "--data", str(corpus), "--run-dir",
            str(run_dir), "--seq-len", "32", "--micro-batch-size", "4", "--micro-batches", "2", *extra]


def fingerprint(folder):
    """Every file under a folder with its content hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(capsys, code, *words):
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("allot: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, corpus):
    """A small run that finished (local engine, 6 steps, checkpoints at 3 and 6)."""
    run_dir = tmp_path_factory.mktemp("runs") / "done"
    code = main(tiny_args(corpus, run_dir, "--engine", "local", "--steps", "6", "--checkpoint-interval", "3",
                          "--log-interval", "3", "--detach"))
    assert code == 0
    assert wait_run(run_dir, timeout_s=90).state == "finished"
    return run_dir


def test_a_missing_corpus_path(tmp_path, capsys):
    code = main(tiny_args(tmp_path / "nope.txt", tmp_path / "run", "--steps", "5"))
    assert_one_line_error(capsys, code, "does not exist")
    assert not (tmp_path / "run").exists()


def test_a_plan_naming_a_device_that_is_not_there(tmp_path, corpus, capsys):
    plan = write_plan(tmp_path / "plan.json", [("cpu", ["embed", "h.0", "h.1", "h.2"]),
                                               ("cuda:3", ["h.3", "h.4", "ln_f", "lm_head"])])
    code = main(tiny_args(corpus, tmp_path / "run", "--plan", str(plan)))
    assert_one_line_error(capsys, code, "cuda:3", "not among the devices")
    assert not (tmp_path / "run").exists()


def test_a_plan_that_skips_a_layer(tmp_path, corpus, capsys):
    plan = write_plan(tmp_path / "plan.json", [("cpu", ["embed", "h.0", "h.2"]),
                                               ("cpu#2", ["h.3", "h.4", "ln_f", "lm_head"])])
    code = main(tiny_args(corpus, tmp_path / "run", "--plan", str(plan)))
    assert_one_line_error(capsys, code, "expected 'h.1'")


@pytest.mark.parametrize("steps", ["0", "-3"])
def test_steps_must_be_positive(tmp_path, corpus, capsys, steps):
    with pytest.raises(SystemExit) as exit_:  # refused by argparse, before anything runs
        main(tiny_args(corpus, tmp_path / "run", "--steps", steps))
    assert_one_line_error(capsys, exit_.value.code, "--steps: must be 1 or more")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # finished_run: a background training job
def test_a_run_directory_that_holds_another_run_is_left_alone(finished_run, corpus, capsys):
    before = fingerprint(finished_run)
    code = main(tiny_args(corpus, finished_run, "--steps", "5"))
    assert_one_line_error(capsys, code, "already holds another run")
    assert fingerprint(finished_run) == before


def test_a_directory_of_user_files_is_left_alone(tmp_path, corpus, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    code = main(tiny_args(corpus, tmp_path / "mine", "--steps", "5"))
    assert_one_line_error(capsys, code, "already holds files")
    assert fingerprint(tmp_path / "mine") == {"thesis.txt": hashlib.sha256(b"precious").hexdigest()}


@pytest.mark.slow  # finished_run: a background training job
def test_resume_refuses_a_corrupt_checkpoint_and_changes_nothing(finished_run, capsys):
    latest = sorted((finished_run / "checkpoints").glob("step_*"))[-1]
    stage = latest / "stage_1.pt"
    original = stage.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 3] ^= 0x55
    stage.write_bytes(bytes(damaged))
    try:
        before = fingerprint(finished_run)
        code = main(["train", "--resume", str(finished_run), "--steps", "9"])
        assert_one_line_error(capsys, code, "is corrupt")
        assert fingerprint(finished_run) == before
    finally:
        stage.write_bytes(original)


@pytest.mark.slow  # finished_run: a background training job
def test_resume_needs_more_steps_and_no_new_settings(finished_run, capsys):
    code = main(["train", "--resume", str(finished_run), "--steps", "6"])
    assert_one_line_error(capsys, code, "already at step 6")
    code = main(["train", "--resume", str(finished_run), "--steps", "9", "--model", "gpt-micro"])
    assert_one_line_error(capsys, code, "--model")
    code = main(["train", "--resume", str(finished_run.parent / "nothing-here")])
    assert_one_line_error(capsys, code, "holds no run")


@pytest.mark.slow  # finished_run: a background training job
def test_runs_lists_state_steps_and_last_loss(finished_run, capsys):
    assert main(["runs", str(finished_run.parent), "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["name"] == "done" and listed["state"] == "finished"
    assert listed["step"] == 6 and listed["steps"] == 6 and listed["last_loss"] > 0
    # each stage's predicted and measured peak memory, and what the measurement counts
    stages = len(listed["predicted_memory_bytes"])
    assert stages == listed["stages"] and len(listed["measured_peak_memory_bytes"]) == stages
    assert all(m > 0 for m in listed["measured_peak_memory_bytes"])
    assert listed["measured_memory_source"] == ["tensors"] * stages
    report = json.loads((finished_run / "report.json").read_text())
    for record in report["stages"]:
        assert record["predicted_memory_bytes"] > 0 and record["measured_peak_memory_bytes"] > 0
        assert record["measured_memory_source"] == "tensors" and record["memory_measured_over_predicted"] > 0
    assert main(["runs", str(finished_run.parent)]) == 0
    table = capsys.readouterr().out
    assert "done" in table and "finished" in table and "6/6" in table
    first = f"{listed['predicted_memory_bytes'][0] / 2**20:.1f}/{listed['measured_peak_memory_bytes'][0] / 2**20:.1f}"
    assert first in table


@pytest.mark.slow  # finished_run: a background training job
def test_resume_continues_at_the_right_step(finished_run, capsys):
    """Last: it changes the shared run. Foreground resume to 9 steps."""
    assert main(["train", "--resume", str(finished_run), "--steps", "9"]) == 0
    out = capsys.readouterr().out
    assert "finished at step 9" in out
    assert "resuming" in out and " at step 6 " in out
    printed = [line.split("/")[0] for line in out.splitlines() if line.startswith("step ")]
    assert printed == ["step 9"]  # steps 3 and 6 were said by the first run: not again as "3/9", "6/9"
    steps = [json.loads(line)["step"] for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 10))


@pytest.mark.parametrize(("extra", "words"), [
    (["--data-parallel", "3"], ["data-parallel 3 does not divide the 2 micro-batches"]),
    (["--data-parallel", "two"], ["data-parallel must be a whole number", "'two'"]),
    (["--zero", "5"], ["--zero: must be 0, 1, 2 or 3, got 5"]),
])
def test_bad_data_parallel_or_zero(tmp_path, corpus, capsys, extra, words):
    try:
        code = main(tiny_args(corpus, tmp_path / "run", *extra))
    except SystemExit as exit_:  # refused by the parser's checked type (--zero), as argparse does
        code = exit_.code
    assert_one_line_error(capsys, code, *words)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("extra", "words"), [
    (["--tensor-parallel", "3"], ["--tensor-parallel 3 must divide the devices (2)"]),
    (["--devices", "4xcpu:1GiB", "--data-parallel", "2", "--tensor-parallel", "4"],
     ["--tensor-parallel 4 must divide the devices per replica (4 / 2)"]),
    (["--model", "gpt-micro", "--devices", "4xcpu:1GiB", "--tensor-parallel", "4"],
     ["--tensor-parallel 4 must divide the model's heads (6) and width (384)"]),
    (["--tensor-parallel", "2", "--engine", "local"], ["tensor parallelism", "--engine pipeline"]),
    (["--tensor-parallel", "0"], ["--tensor-parallel: must be 1 or more, got 0"]),
])
def test_bad_tensor_parallel(tmp_path, corpus, capsys, extra, words):
    try:
        code = main(tiny_args(corpus, tmp_path / "run", *extra))
    except SystemExit as exit_:  # refused by the parser's checked type, as argparse does
        code = exit_.code
    assert_one_line_error(capsys, code, *words)
    assert not (tmp_path / "run").exists()


def test_replicas_and_zero_come_from_the_plan_unless_given(tmp_path, corpus, capsys):
    from tests.core.training.support import write_hybrid_plan

    plan = str(write_hybrid_plan(tmp_path / "plan.json", zero=3))
    four = ["--devices", "4xcpu:1GiB"]
    # the plan's 2 replicas leave 1 of the 2 micro-batches to each: too few for 2 stages under 1F1B
    code = main([*tiny_args(corpus, tmp_path / "run", "--plan", plan), *four])
    assert_one_line_error(capsys, code, "micro-batches per replica (2 / 2) as stages (2)", "--micro-batches 4")
    code = main([*tiny_args(corpus, tmp_path / "run", "--plan", plan, "--zero", "0"), *four])
    assert_one_line_error(capsys, code, "the plan runs ZeRO stage 3 but --zero is 0")
    assert not (tmp_path / "run").exists()


def test_a_run_the_host_cannot_hold_is_refused_before_it_starts(tmp_path, corpus, capsys, monkeypatch):
    """Simulated GPUs are executed by the host: their stages must fit its available memory."""
    from core.training import memory_check

    monkeypatch.setattr(memory_check, "read_holder_memory",
                        lambda plan: memory_check.HolderMemory(host_available_bytes=1024))
    args = tiny_args(corpus, tmp_path / "run", "--steps", "5")
    args[args.index("--devices") + 1] = "A100-80GB,RTX4090"
    code = main(args)
    assert_one_line_error(capsys, code, "would run out of memory: stage 1 of ", "executed by this host's CPU)",
                          "the host has 1.00 KiB available", "short")
    assert not (tmp_path / "run").exists()


def test_help_says_it_trains_hf_models_too(capsys):
    """Issue 19 item 6: `train --help` said "train the built-in GPT" though it fine-tunes HF models."""
    for argv in (["--help"], ["train", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        assert "train the built-in GPT" not in out
    assert "Hugging Face model" in out and "--save-hf" in out

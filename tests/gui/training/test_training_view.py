"""The Training tab: start, watch and stop a run; reopen and compare past runs; close and reattach.

Every job a test starts lives under its `runs_dir`; the fixture stops (or kills)
whatever still runs there, so no process outlives the test.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from core.model.config import ModelChoice
from core.planning.device_resolution import DeviceEntry
from core.planning.setup import TrainingSetup
from core.project import Project
from core.runs.smoothing import debiased_ema
from core.training.launcher import (
    list_runs,
    read_metrics,
    read_status,
    start_run,
    stop_run,
    wait_run,
)
from core.training.plan_file import read_plan_file
from gui.training.training_view import TrainingView
from tests.core.training.support import tiny_config, write_corpus, write_plan
from tests.gui.conftest import PLAN_TIMEOUT_MS, small_project

pytestmark = pytest.mark.slow  # training jobs: seconds each

GIB = 1024**3
LIVE_RUN_STEPS = 200  # the started run's: stopped long before, validated every 20 steps (core.training.new_run)
JOB_TIMEOUT_MS = 240_000  # a job imports torch, tokenizes and starts torchrun on a (possibly loaded) 2-core machine


def finish_jobs(root: Path) -> None:
    """Stop every run still going under `root`; kill what does not stop in time."""
    for run in list_runs(root):
        status = read_status(run.path)
        if status.state != "running" or not status.alive or status.pid == os.getpid():
            continue  # (a run written by a test names this process as its job)
        stop_run(run.path)
        if wait_run(run.path, timeout_s=30).state == "running" and status.pid is not None:
            os.killpg(status.pid, signal.SIGKILL)  # the job leads its own session (start_new_session)


@pytest.fixture
def runs_dir(tmp_path: Path):
    root = tmp_path / "runs"
    yield root
    finish_jobs(root)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


@pytest.fixture(scope="module")
def past_runs(tmp_path_factory, corpus):
    """Two finished runs of gpt-nano (local engine, two stages), with different learning rates."""
    root = tmp_path_factory.mktemp("past") / "runs"
    plan = write_plan(root.parent / "plan.json")
    try:
        # one after the other: two torch jobs on two cores oversubscribe their threads
        for name, steps, rate in (("slow", 6, 1e-3), ("fast", 8, 3e-3)):
            handle = start_run(tiny_config(corpus, steps=steps, eval_interval=3, learning_rate=rate), root / name,
                               read_plan_file(plan), emit=lambda _: None)
            assert wait_run(handle.run_dir, timeout_s=120).state == "finished", \
                (handle.run_dir / "train.log").read_text()[-2000:]
    finally:
        finish_jobs(root)
    return root


def host_project() -> Project:
    """gpt-nano on this machine's CPU alone: one stage, a small batch."""
    host = DeviceEntry(name="cpu", kind="host", memory_total_bytes=2 * GIB, budget_bytes=2 * GIB)
    setup = TrainingSetup(precision="fp32", micro_batch_size=2, seq_len=64, micro_batches=2)
    return Project(devices=(host,), model=ModelChoice(name="gpt-nano"), setup=setup)


def training_window(make_window, runs_dir: Path, project: Project | None = None, **view_args):
    window = make_window(project or small_project(model="gpt-nano"))
    window.close_policy = "leave"  # teardown closes windows: never block on the question
    view = TrainingView(window.state, runs_dir, **view_args)
    window.set_training_view(view)
    window.tabs.setCurrentWidget(view)
    return window, view


def points(item) -> int:
    x, _ = item.getOriginalDataset()
    return 0 if x is None else len(x)


def test_start_a_gpt_nano_run_watch_its_loss_and_stop_it(qtbot, make_window, runs_dir):
    watched: list[tuple[int, ...]] = []
    window, view = training_window(make_window, runs_dir, host_project(), watch_pids=watched.append)
    qtbot.waitUntil(view.start_button.isEnabled, timeout=PLAN_TIMEOUT_MS)
    assert view.name_edit.text().startswith("gpt-nano-") and view.steps_box.value() == 200
    # bad input: one line, nothing written
    view.name_edit.setText("a/b")
    qtbot.mouseClick(view.start_button, Qt.MouseButton.LeftButton)
    assert "plain folder name" in view.message_label.text() and not runs_dir.exists()
    view.name_edit.setText("nano")
    # far more than the test waits for (it is stopped, not finished); the first validation point
    # comes at step 20, soon even on a busy machine (the step takes 5 s with the other core taken)
    view.steps_box.setValue(LIVE_RUN_STEPS)
    qtbot.mouseClick(view.start_button, Qt.MouseButton.LeftButton)
    assert view.message_label.text().startswith("Preparing nano") and not view.start_button.isEnabled()
    qtbot.waitUntil(lambda: view.live_run() is not None, timeout=JOB_TIMEOUT_MS)
    run = view.live_run()
    assert run == (runs_dir / "nano").resolve() and not view.start_button.isEnabled()
    assert "in progress" in view.reason_label.text() and view.stop_button.isEnabled()
    qtbot.waitUntil(lambda: points(view.loss_plot.train_smooth) >= 3 and points(view.loss_plot.val_smooth) >= 1,
                    timeout=JOB_TIMEOUT_MS)
    # tokens/s is drawn a frame after the loss plot, the stages and figures a frame after that
    qtbot.waitUntil(lambda: points(view.rate_plot.smooth) >= 3 and view.stages.table.rowCount() == 1)
    assert view.progress.maximum() == LIVE_RUN_STEPS and view.progress.value() >= 3
    assert view.eta_label.text().startswith("ETA")
    assert view.stages.table.item(0, 0).text() == "0: cpu"
    assert read_status(run).pid in watched[-1]  # the monitor shows the job's CPU and memory
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["engine"] == "pipeline"
    assert [(d["name"], d["memory_bytes"]) for d in config["devices"]] == [("cpu", 2 * GIB)]  # typed, no spec

    qtbot.mouseClick(view.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.live_run() is None, timeout=JOB_TIMEOUT_MS)
    assert read_status(run).state == "stopped"
    qtbot.waitUntil(lambda: view.cards["state"].value.text() == "stopped")  # at the next redraw
    assert watched[-1] == ()
    row = view.history.row_of(run)
    assert row is not None and view.history.item(row, 2).text() == "stopped"
    steps = len(read_metrics(run / "metrics.jsonl"))
    assert points(view.loss_plot.train_smooth) == steps and 3 <= steps < LIVE_RUN_STEPS
    assert view.start_button.isEnabled() and view.resume_button.isEnabled()

    qtbot.mouseClick(view.resume_button, Qt.MouseButton.LeftButton)  # on from the stop's checkpoint
    assert view.message_label.text().startswith("Resuming nano")
    qtbot.waitUntil(lambda: view.live_run() == run and points(view.loss_plot.train_smooth) > steps + 2,
                    timeout=JOB_TIMEOUT_MS)
    x = view.loss_plot.train_raw.getOriginalDataset()[0]
    assert x.tolist() == list(range(1, len(x) + 1))  # one continuous curve, each step once
    view.stop_training()
    qtbot.waitUntil(lambda: view.live_run() is None, timeout=JOB_TIMEOUT_MS)
    assert read_status(run).state == "stopped"


def test_reopen_a_past_run_from_the_history(qtbot, make_window, past_runs):
    window, view = training_window(make_window, past_runs)
    history = view.history
    assert {history.item(row, 1).text() for row in range(history.rowCount())} == {"slow", "fast"}
    assert view.current is None and points(view.loss_plot.train_smooth) == 0
    row = history.row_of((past_runs / "slow").resolve())
    cell = history.visualItemRect(history.item(row, 1)).center()
    qtbot.mouseClick(history.viewport(), Qt.MouseButton.LeftButton, pos=cell)  # a double-click starts with one
    qtbot.mouseDClick(history.viewport(), Qt.MouseButton.LeftButton, pos=cell)
    assert view.current == (past_runs / "slow").resolve()
    losses = [r["loss"] for r in read_metrics(past_runs / "slow" / "metrics.jsonl")]
    x, y = view.loss_plot.train_raw.getOriginalDataset()
    assert x.tolist() == list(range(1, 7)) and y.tolist() == pytest.approx(losses)
    assert points(view.loss_plot.val_smooth) == 2  # evaluated at steps 3 and 6
    qtbot.waitUntil(lambda: view.cards["state"].value.text() == "finished")  # a frame after the loss plot
    assert view.progress.format() == "step 6 / 6"
    assert [view.stages.table.item(s, 0).text() for s in range(2)] == ["0: cpu", "1: cpu#2"]
    assert all(stage.measured_compute_s and stage.predicted_compute_s for stage in view.stages.report.stages)
    assert view.live_run() is None and not view.poll_timer.isActive()  # a finished run is not polled
    assert "slow" in view.run_title.text() and "2 stages" in view.run_title.text()


def test_overlay_another_run_to_compare(qtbot, make_window, past_runs):
    window, view = training_window(make_window, past_runs)
    view.open_run(past_runs / "slow")
    fast = (past_runs / "fast").resolve()
    view.history.item(view.history.row_of(fast), 0).setCheckState(Qt.CheckState.Checked)
    overlay = view.loss_plot.overlays[fast]
    x, y = overlay.raw.getOriginalDataset()
    assert x.tolist() == list(range(1, 9))
    assert y.tolist() == pytest.approx([r["loss"] for r in read_metrics(fast / "metrics.jsonl")])
    assert overlay.smooth.opts["pen"].color() != view.loss_plot.train_smooth.opts["pen"].color()
    assert "fast" in [label.text for _, label in view.loss_plot.legend.items]
    view.refresh_history()  # a refill keeps the tick
    assert view.history.item(view.history.row_of(fast), 0).checkState() == Qt.CheckState.Checked
    view.clear_overlays_button.click()
    assert view.loss_plot.overlays == {} and "fast" not in [label.text for _, label in view.loss_plot.legend.items]
    assert view.history.item(view.history.row_of(fast), 0).checkState() == Qt.CheckState.Unchecked


def test_smoothing_log_y_and_the_time_axis(qtbot, make_window, past_runs):
    window, view = training_window(make_window, past_runs)
    view.open_run(past_runs / "fast")
    plot = view.loss_plot
    raw = plot.train_raw.getOriginalDataset()[1]
    plot.smoothing_slider.setValue(90)
    assert plot.train_smooth.getOriginalDataset()[1] == pytest.approx(debiased_ema(raw, 0.9)[0])
    assert plot.smoothing_label.text() == "0.90"
    plot.smoothing_slider.setValue(0)
    assert np.array_equal(plot.train_smooth.getOriginalDataset()[1], raw)
    plot.log_y.setChecked(True)
    assert plot.plot.ctrl.logYCheck.isChecked()
    plot.x_axis_box.setCurrentIndex(plot.x_axis_box.findData("time"))
    times = plot.train_raw.getOriginalDataset()[0]
    elapsed = [r["elapsed_s"] for r in read_metrics(past_runs / "fast" / "metrics.jsonl")]
    assert times.tolist() == pytest.approx(elapsed)
    qtbot.waitUntil(lambda: points(view.rate_plot.smooth) and  # drawn a frame after the loss plot
                    view.rate_plot.smooth.getOriginalDataset()[0].tolist() == pytest.approx(elapsed))


def test_start_is_enabled_for_a_model_folder_and_says_why_for_one_it_cannot_train(qtbot, make_window, runs_dir,
                                                                                  tmp_path):
    from tests.core.training.engine.hf_support import save_model, tiny_llama_config

    window, view = training_window(make_window, runs_dir)
    qtbot.waitUntil(view.start_button.isEnabled, timeout=PLAN_TIMEOUT_MS)
    folder = save_model(tiny_llama_config(layers=2, max_position_embeddings=256), tmp_path / "tiny-llama")
    window.state.set_model(ModelChoice(source="config", name=str(folder)))
    qtbot.waitUntil(view.start_button.isEnabled, timeout=PLAN_TIMEOUT_MS)
    (tmp_path / "no-weights").mkdir()
    (tmp_path / "no-weights" / "config.json").write_text((folder / "config.json").read_text())
    window.state.set_model(ModelChoice(source="config", name=str(tmp_path / "no-weights")))
    assert not view.start_button.isEnabled() and "has no weights" in view.reason_label.text()
    assert not view.start_training() and "has no weights" in view.message_label.text() and not runs_dir.exists()
    from transformers import (
        XLNetConfig,  # a type the generic split refuses (resources/hf_coverage.json)
    )

    refused = save_model(XLNetConfig(vocab_size=256, d_model=32, n_layer=2, n_head=4, d_inner=64),
                         tmp_path / "tiny-xlnet")
    window.state.set_model(ModelChoice(source="config", name=str(refused)))
    assert not view.start_button.isEnabled() and "'xlnet' has parameters outside" in view.reason_label.text()
    view.grab().save("/tmp/hf-refused-folder.png")
    window.state.set_model(ModelChoice(name="gpt-nano"))
    window.state.set_setup(TrainingSetup(mode="infer", micro_batch_size=8, seq_len=256, micro_batches=8))
    assert not view.start_button.isEnabled() and "train mode" in view.reason_label.text()


def write_run(root: Path, steps: int, rows: int, state: str) -> Path:
    """A run directory in the real format, with `rows` metrics rows, as if its job were this process."""
    import socket

    import psutil

    root.mkdir(parents=True)
    setup = {"micro_batches": 2}
    (root / "config.json").write_text(json.dumps({"config": {"steps": steps, "engine": "local", "setup": setup},
                                                  "model": {"name": "gpt-nano"}, "created_at": 1.0}))
    stage = {"device": "cpu", "layers": ["embed", "lm_head"], "compute_s": 0.01, "time_s": 0.01}
    (root / "plan.json").write_text(json.dumps({"status": "optimal", "objective_s": 0.03, "stages": [stage]}))
    me = psutil.Process()
    (root / "status.json").write_text(json.dumps({"state": state, "pids": {"job": me.pid}, "steps": steps,
                                                  "host": socket.gethostname(), "job_create_time": me.create_time(),
                                                  "started_at": 1.0}))
    append_rows(root, range(1, rows + 1))
    return root


def append_rows(root: Path, steps, loss: float = 5.0) -> None:
    with open(root / "metrics.jsonl", "a") as file:
        for step in steps:
            file.write(json.dumps({"step": step, "elapsed_s": 0.1 * step, "loss": loss - step / 100,
                                   "tokens_per_s": 100.0, "step_time_s": 0.1, "stage_compute_s": [0.02],
                                   "stage_idle_s": [0.0]}) + "\n")


def test_a_live_run_is_followed_through_a_resume_that_drops_rows(qtbot, make_window, runs_dir):
    run = write_run(runs_dir / "live", steps=100, rows=10, state="running")
    window, view = training_window(make_window, runs_dir)
    assert view.live_run() == run.resolve() and view.poll_timer.isActive()  # reattached
    qtbot.waitUntil(lambda: points(view.loss_plot.train_smooth) == 10)  # drawn once the tab shows
    qtbot.waitUntil(lambda: view.progress.format() == "step 10 / 100")  # a frame after the loss plot
    append_rows(run, range(11, 21))
    qtbot.waitUntil(lambda: points(view.loss_plot.train_smooth) == 20)
    qtbot.waitUntil(lambda: view.eta_label.text() == "ETA 8 s")  # 80 steps at 0.1 s
    # a resume keeps the rows up to its checkpoint: the file is replaced, the curve follows
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    replacement = run / "metrics.new"
    replacement.write_text("".join(lines[:15]))
    os.replace(replacement, run / "metrics.jsonl")
    append_rows(run, range(16, 18), loss=4.0)
    qtbot.waitUntil(lambda: points(view.loss_plot.train_smooth) == 17)
    x, y = view.loss_plot.train_raw.getOriginalDataset()
    assert x.tolist() == list(range(1, 18)) and y[-1] == pytest.approx(4.0 - 0.17)
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "finished"}))
    qtbot.waitUntil(lambda: view.live_run() is None)
    assert not view.poll_timer.isActive() and "finished" in view.message_label.text()


def click_in_message_box(text: str) -> None:
    """Click a button of the question once it is open (it runs its own event loop)."""
    def click() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(20, click)
            return
        next(button for button in box.buttons() if button.text() == text).click()

    QTimer.singleShot(0, click)


def test_the_close_question_offers_stop_leave_and_cancel(qtbot, make_window, runs_dir):
    window, _ = training_window(make_window, runs_dir)
    for text, answer in (("Stop the run", "stop"), ("Leave it running", "leave"), ("Cancel", "cancel")):
        click_in_message_box(text)
        assert window.ask_about_live_run(Path("runs/nano")) == answer


def test_close_cancel_leave_then_a_new_window_reattaches_and_close_stops(qtbot, make_window, runs_dir, corpus,
                                                                         past_runs, tmp_path, monkeypatch):
    run = start_run(tiny_config(corpus, steps=100_000, eval_interval=5, checkpoint_interval=50), runs_dir / "long",
                    read_plan_file(write_plan(tmp_path / "plan.json")), emit=lambda _: None).run_dir
    qtbot.waitUntil(lambda: read_status(run).alive and read_status(run).step >= 0, timeout=JOB_TIMEOUT_MS)
    first, view = training_window(make_window, runs_dir)
    assert view.live_run() == run and "Reattached" in view.message_label.text()
    qtbot.waitUntil(lambda: points(view.loss_plot.train_smooth) >= 2, timeout=JOB_TIMEOUT_MS)
    view.open_run(past_runs / "slow")  # looking at a past run: the job is still followed
    assert view.current == (past_runs / "slow").resolve() and view.live_run() == run
    assert view.stop_button.isEnabled() and not view.start_button.isEnabled()
    assert points(view.loss_plot.train_smooth) == 6
    qtbot.waitUntil(lambda: view.cards["state"].value.text() == "finished")

    first.close_policy = None
    answers = iter(["cancel", "leave"])
    monkeypatch.setattr(first, "ask_about_live_run", lambda path: next(answers))
    assert not first.close() and first.isVisible()  # cancel: the window stays, and so does the run
    assert first.close() and not first.isVisible()  # leave: the window goes, the run goes on
    assert not view.poll_timer.isActive() and not view.history_timer.isActive()
    assert read_status(run).state == "running" and read_status(run).alive

    second, again = training_window(make_window, runs_dir)  # the app reopened
    assert again.live_run() == run
    shown = points(again.loss_plot.train_smooth)
    qtbot.waitUntil(lambda: points(again.loss_plot.train_smooth) > shown, timeout=JOB_TIMEOUT_MS)
    second.close_policy = "stop"
    assert second.close()
    assert wait_run(run, timeout_s=60).state == "stopped"


def test_save_as_hf_writes_a_finished_hf_run_for_from_pretrained(qtbot, make_window, runs_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from core.training.launcher import start_run
    from tests.core.training.engine.hf_support import hf_run_config, save_model, tiny_llama_config

    folder = save_model(tiny_llama_config(layers=2), tmp_path / "tiny-llama")
    config = hf_run_config(str(folder), write_corpus(tmp_path / "corpus.txt", lines=800), steps=2,
                           devices="cpu:2GiB")
    start_run(config, runs_dir / "ft", emit=lambda _: None)
    assert wait_run(runs_dir / "ft", timeout_s=120).state == "finished"
    window, view = training_window(make_window, runs_dir)
    view.refresh_history()
    view.open_run(runs_dir / "ft")
    qtbot.waitUntil(view.save_hf_button.isEnabled, timeout=PLAN_TIMEOUT_MS)
    assert view.hf_saver.save(str(tmp_path / "out"))
    qtbot.waitUntil(lambda: "Saved the Hugging Face model" in view.message_label.text(), timeout=60_000)
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "out").config.num_hidden_layers == 2
    assert view.save_hf_button.isEnabled()  # again, to another folder


def test_a_run_on_simulated_gpus_shows_the_host_in_the_stage_table(qtbot, make_window, runs_dir, corpus):
    """Issue 12 item 3: what the run recorded (the host runs the simulated GPUs) reaches the table."""
    from core.training.run_dir import RunPaths, write_status
    from core.training.run_info import read_run_info
    from core.training.runner import prepare_new_run
    from gui.training.stages import DATASHEET_COLUMN, PREDICTED_COLUMN, RUNS_ON_COLUMN

    split = [("A100-80GB", ["embed", "h.0", "h.1", "h.2"]), ("RTX4090", ["h.3", "h.4", "ln_f", "lm_head"])]
    plan = read_plan_file(write_plan(runs_dir.parent / "plan.json", split))
    run = runs_dir / "simulated"
    prepare_new_run(tiny_config(corpus, devices="A100-80GB:1GiB,RTX4090:1GiB"), run, plan, emit=lambda _: None)
    rows = [{"step": step, "loss": 5.0 - step / 10, "step_time_s": 0.2, "stage_compute_s": [0.1, 0.08],
             "stage_idle_s": [0.0, 0.01]} for step in range(1, 6)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    write_status(RunPaths(run), state="finished", step=5, steps=5)  # as the job leaves it
    _, view = training_window(make_window, runs_dir)
    assert view.open_run(run)
    qtbot.waitUntil(lambda: view.stages.report is not None, timeout=PLAN_TIMEOUT_MS)
    table, info = view.stages.table, read_run_info(run)
    host = info.executions[0].run_tflops
    assert host is not None and info.executions[0].simulated == "A100-80GB"
    assert table.item(0, RUNS_ON_COLUMN).text() == "host CPU"
    # the prediction for what runs: the plan's datasheet time scaled by the A100's speed over the host's
    datasheet = info.plan.stages[0].compute_s
    expected = datasheet * info.executions[0].planned_tflops / host
    assert table.item(0, PREDICTED_COLUMN).text() == f"{1000 * expected:.2f} ms"
    assert table.item(0, DATASHEET_COLUMN).text() == f"{1000 * datasheet:.2f} ms"
    header = table.horizontalHeaderItem(DATASHEET_COLUMN)
    assert "datasheet" in header.text() and "A100-80GB" in header.toolTip()  # the names in its tooltip


def test_start_is_disabled_with_the_shortfall_when_the_host_cannot_hold_the_stages(qtbot, make_window, runs_dir):
    """Simulated GPUs are executed by the host: their predicted peaks against its available memory."""
    from core.training.memory_check import HolderMemory

    window, view = training_window(make_window, runs_dir)
    view.holder_memory = lambda plan: HolderMemory(host_available_bytes=1024)
    view._update_controls()
    assert not view.start_button.isEnabled()
    reason = view.reason_label.text()
    assert reason.startswith("Cannot start: stage 1 of ") and "executed by this host's CPU" in reason
    assert "the host has 1.00 KiB available" in reason and reason.endswith("short")
    view.grab().save(str(runs_dir.parent / "refused.png"))
    assert not view.start_training() and view.message_label.text() == reason and not runs_dir.exists()
    view.holder_memory = lambda plan: HolderMemory(host_available_bytes=1 << 40)
    view._history_tick()  # the available memory is read again every few seconds
    assert view.start_button.isEnabled() and view.reason_label.text() == ""

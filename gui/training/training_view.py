"""The Training tab: start, stop and resume runs; follow one live; compare past runs.

    ┌ Steps [200] Engine [pipeline] Run [gpt-nano-2026…] Start Stop Resume ────────┐
    │ why Start is disabled · what the last action did                             │
    │ [State] [Loss] [Val loss] [Tokens/s] [Progress ███████░░ 120 / 200, ETA 42 s] │
    │ loss plot (smoothing, log y, x axis)       │ tokens/s                         │
    │                                            │ per stage: predicted vs measured │
    │ Runs in ./runs: Compare · Run · State · Step · ... [Open] [Save as HF…]      │
    └──────────────────────────────────────────────────────────────────────────────┘

Training is a separate process (core.training.launcher): this view prepares
and starts it from a child process (gui.training.launch), then only reads its
run directory. Opening a run reads its metrics in the reader process
(gui.training.curves_view). While a run is live a timer tails metrics.jsonl
every POLL_MS from where that read ended, and a single-shot timer redraws at
most every REDRAW_MS, and only when rows arrived (a hidden tab draws when next
shown). A redraw paints the loss plot, then tokens/s, then the stages and
figures, each REST_DELAY_MS after the one before, so no frame repaints every
plot. While a long run is read only the loss plot refines; the rest is drawn
when the read ends. An idle view re-reads the run history every HISTORY_MS
while shown.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import QWidget

from core.errors import InputError
from core.planning.front_door import Plan
from core.system.child_call import Call
from core.training.launcher import (
    RUNNING,
    HolderMemory,
    RunHandle,
    RunStatus,
    check_run_name,
    default_run_name,
    list_runs,
    memory_shortfall,
    read_holder_memory,
    read_status,
    resume_run,
    run_devices,
    start_run,
    stop_run,
    train_config,
    why_not_trainable,
)
from core.training.run_info import RunInfo, read_run_info, run_report
from gui.state import AppState
from gui.training.curves_view import CurvesView
from gui.training.data_picker import DataPicker
from gui.training.host_offer import HostOffer
from gui.training.launch import LaunchThread, job_pids
from gui.training.save_hf import HFSaver

POLL_MS = 500
REDRAW_MS = 100  # at most 10 redraws a second
REST_DELAY_MS = 40  # after the loss plot's frame: the other plots' own frame
HISTORY_MS = 3000
LAUNCH_WAIT_MS = 60_000  # shutdown waits this long for a start in progress


class TrainingView(CurvesView):
    """Start / Stop / Resume, live curves and the run history of `runs_dir`.

    Two runs matter: the open one (`current`, drawn) and the live one (the job
    this view follows: started here, reattached, or opened while running).
    They differ when a past run is opened while a job trains; the job is still
    followed (its status), and Stop, the close question and `live_run` are about it.
    `watch_pids` (e.g. TelemetrySampler.set_watched_pids) is told the live
    job's process ids, and () when it ends. `data_picker.data` is the corpus of new runs.
    """

    def __init__(self, state: AppState, runs_dir: Path, watch_pids: Callable[[tuple[int, ...]], None] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.runs_dir = Path(runs_dir).expanduser().resolve()
        self.data_picker = DataPicker(self.data_button, self)  # the data of new runs: text or .jsonl
        self.status: RunStatus | None = None  # the open run's
        self._live: Path | None = None  # the followed job's run
        self._live_status: RunStatus | None = None
        self._watch_pids = watch_pids
        self._watched: tuple[int, ...] = ()
        self.info: RunInfo | None = None  # the open run's
        self._launch: LaunchThread | None = None
        self._launch_message = ""
        self._stopping = False
        self._closed = False
        self._redraw_pending = False
        self._default_name = ""
        self.holder_memory: Callable[[Plan], HolderMemory] = read_holder_memory  # what would hold the stages now
        self.poll_timer = self._timer(POLL_MS, self._poll)
        self.redraw_timer = self._timer(REDRAW_MS, self._redraw, single_shot=True)
        self.rest_timer = self._timer(REST_DELAY_MS, self._redraw_rest, single_shot=True)
        self.report_timer = self._timer(REST_DELAY_MS, self._redraw_report, single_shot=True)
        self.history_timer = self._timer(HISTORY_MS, self._history_tick)
        self.history_timer.start()
        self.loss_plot.options_changed.connect(self.rest_timer.start)  # the loss plot redrew itself
        self.start_button.clicked.connect(self.start_training)
        self.stop_button.clicked.connect(self.stop_training)
        self.resume_button.clicked.connect(lambda: self.resume_training())
        self.hf_saver = HFSaver(self.save_hf_button, self._say, self)
        self.steps_box.setValue(state.steps)  # saved with the project
        self.steps_box.valueChanged.connect(state.set_steps)
        state.steps_changed.connect(self.steps_box.setValue)
        self.host_offer = HostOffer(state, self)  # simulated GPUs run by the host: say so, offer a host plan
        self.notes_row.insertWidget(1, self.host_offer)
        self.open_button.clicked.connect(self._open_selected)
        self.history.open_requested.connect(self.open_run)
        self.history.itemSelectionChanged.connect(self._update_controls)
        for signal in (state.model_changed, state.setup_changed, state.plan_changed, state.busy_changed,
                       state.devices_changed):
            signal.connect(self._update_controls)
        state.model_changed.connect(self._renew_default_name)
        self.history_title.setText(f"Runs in {self.runs_dir}")
        self._renew_default_name()
        self.refresh_history()
        self._reattach()
        self._update_controls()

    def _timer(self, interval_ms: int, slot: Callable[[], None], single_shot: bool = False) -> QTimer:
        timer = QTimer(self)
        timer.setInterval(interval_ms)
        timer.setSingleShot(single_shot)
        timer.timeout.connect(slot)
        return timer

    # -- public ----------------------------------------------------------------------

    def start_training(self) -> bool:
        """Start a run of the current model, setup and plan (prepared in a child process).

        Returns whether it is being started; otherwise the message line says why.
        """
        reason = self.start_block_reason()
        if reason is not None:
            return self._say(reason, error=True)
        try:
            name = check_run_name(self.name_edit.text() or self._default_name)
            plan = self.state.plan
            assert plan is not None  # start_block_reason checked it
            devices = run_devices(self.state.included_devices, plan, self.state.setup.precision,
                                  self.state.host_peak_tflops)
            config = train_config(self.state.model, self.state.setup, devices, self.steps_box.value(),
                                  str(self.engine_box.currentData()), self.data_picker.data,
                                  tensor_parallel=plan.tensor_parallel)
        except InputError as error:
            return self._say(str(error), error=True)
        start = Call(start_run, (config, self.runs_dir / name, plan), takes_emit=True)
        return self._launch_with(start, f"Preparing {name}…")

    def stop_training(self) -> bool:
        """Ask the followed run to stop (it finishes its step, checkpoints and exits)."""
        run = self.live_run()
        if run is None:
            return self._say("No run is in progress.", error=True)
        try:
            stop_run(run)
        except InputError as error:
            return self._say(str(error), error=True)
        self._stopping = True
        self._update_controls()
        return self._say("Stopping: the job finishes its step and saves a checkpoint…")

    def resume_training(self, run_dir: Path | str | None = None) -> bool:
        """Continue a run (the selected one by default) from its last checkpoint,
        to the steps in the box if that is more than it was set to."""
        path = Path(run_dir).expanduser().resolve() if run_dir is not None else self._resume_target()
        if path is None:
            return self._say("Select a run to resume in the history.", error=True)
        if self._launch is not None or self._is_live():
            return self._say("Another run is in progress or being prepared: one at a time.", error=True)
        try:
            info = read_run_info(path)
        except InputError as error:
            return self._say(str(error), error=True)
        wanted = self.steps_box.value()
        steps = wanted if wanted > info.steps else None
        return self._launch_with(Call(resume_run, (path, steps)), f"Resuming {path.name}…")

    def open_run(self, run_dir: Path | str | None) -> bool:
        """Show a run: its curves, stages and status; follow it while it runs."""
        if run_dir is None:
            return False
        try:
            info = read_run_info(run_dir)
        except InputError as error:
            return self._say(str(error), error=True)
        path = info.path
        self.current, self.info = path, info
        self._read_metrics(path)
        self.status = _status_or_none(path)
        stages = info.stages
        self.run_title.setText(f"{info.name}  ·  {info.model_name}  ·  {info.engine}  ·  "
                               f"{stages} stage{'s' if stages != 1 else ''}")
        if _running(self.status):
            self._follow(path, self.status)
        row = self.history.row_of(path)
        if row is not None:
            self.history.selectRow(row)
        self._redraw()  # now: the user asked for this run
        self._update_controls()
        return True

    def live_run(self) -> Path | None:
        """The followed run while its job runs."""
        return self._live if self._is_live() else None

    def refresh_history(self) -> None:
        self.history.show_runs(list_runs(self.runs_dir))

    def shutdown(self) -> None:
        """Stop timers and wait for a start in progress; the job itself keeps running."""
        if self._closed:
            return
        self._closed = True
        self.reads.cancel_all()
        for timer in (self.poll_timer, self.redraw_timer, self.rest_timer, self.report_timer, self.history_timer):
            timer.stop()
        if self._launch is not None:
            self._launch.wait(LAUNCH_WAIT_MS)
        self.hf_saver.wait()
        if self._watched and self._watch_pids is not None:
            self._watch_pids(())

    def start_block_reason(self) -> str | None:
        """Why Start is disabled, in one line (None: it is enabled)."""
        if self._launch is not None:
            return "A run is being prepared…"
        if self._is_live():
            return "A run is in progress: stop it (or let it finish) before starting another"
        reason = why_not_trainable(self.state.model, self.state.setup)
        if reason is not None:
            return reason
        plan = self.state.plan
        if self.state.busy or (plan is None and not self.state.error):
            return "Waiting for the plan of the current inputs…"
        if plan is None:
            return "No plan to train with: see the banner"
        if not plan.feasible:
            return "No placement fits the devices: see the banner"
        shortfall = memory_shortfall(plan, self.holder_memory(plan))
        if shortfall is not None:
            return f"Cannot start: {shortfall}"
        return None

    # -- launching -----------------------------------------------------------------------

    def _launch_with(self, call: Call, message: str) -> bool:
        if self._launch is not None:
            return self._say("A run is being prepared: wait for it.", error=True)
        launch = LaunchThread(call, self)
        # bound methods of this widget: queued to the GUI thread (a bare lambda would run on the worker's)
        launch.progress.connect(self._launch_progress)
        launch.succeeded.connect(self._launched)
        launch.failed.connect(self._launch_failed)
        self._launch, self._launch_message = launch, message
        self._say(message)
        self._update_controls()
        launch.start()
        return True

    def _launch_progress(self, line: str) -> None:
        self._say(f"{self._launch_message} {line.strip()}")

    def _launched(self, handle: RunHandle) -> None:
        self._end_launch()
        if self._closed:
            return
        self.refresh_history()
        self.open_run(handle.run_dir)
        self._renew_default_name(force=True)
        self._say(f"Started {handle.run_dir.name} (job {handle.pid}).")

    def _launch_failed(self, message: str) -> None:
        self._end_launch()
        self._say(message, error=True)
        self._update_controls()

    def _end_launch(self) -> None:
        if self._launch is not None:
            self._launch.wait()
            self._launch.deleteLater()
            self._launch = None

    # -- following the open run ------------------------------------------------------------

    def _is_live(self) -> bool:
        return self._live is not None and _running(self._live_status)

    def _follow(self, path: Path, status: RunStatus | None) -> None:
        self._live, self._live_status, self._stopping = path, status, False
        self.poll_timer.start()
        self._watch()

    def _poll(self) -> None:
        live = self._live
        if live is None or self._closed:
            self.poll_timer.stop()
            return
        # The status first: rows written before the job said it ended are then read below.
        status = _status_or_none(live)
        if live == self.current and self._tail is not None:
            update = self._tail.poll()
            if update.reset:  # a resume dropped rows after its checkpoint: read the file again
                self._read_metrics(live)
            elif self.curves.add_rows(update.rows):
                self._schedule_redraw()
            self.status = status
        if status != self._live_status:
            self._live_status = status
            self._live_changed()

    def _live_changed(self) -> None:
        status, live = self._live_status, self._live
        if not self._is_live() and live is not None:
            self.poll_timer.stop()
            self._live, self._stopping = None, False
            self._watch()
            self.refresh_history()
            if status is not None and status.state == "failed":
                self._say(f"{live.name} failed: {status.error}", error=True)
            elif status is not None:
                self._say(f"{live.name} {status.state} at step {status.step}.")
        self._schedule_redraw()
        self._update_controls()

    def _watch(self) -> None:
        status = self._live_status
        pids = job_pids(status.pids.values()) if status is not None and self._is_live() else ()
        if pids != self._watched and self._watch_pids is not None:
            self._watch_pids(pids)
        self._watched = pids

    def _reattach(self) -> None:
        """Follow a job that outlived an earlier window (the newest one alive)."""
        for run in list_runs(self.runs_dir):
            if run.state == RUNNING:
                status = _status_or_none(run.path)
                if status is not None and status.alive:
                    self.open_run(run.path)
                    self._say(f"Reattached to {run.name}, still running.")
                    return

    def _history_tick(self) -> None:
        if self.isVisible():
            self.refresh_history()
            self._update_controls()  # the memory that would hold a run's stages changes
        if self._is_live():
            self._watch()  # torchrun starts its workers after the job

    # -- drawing ------------------------------------------------------------------------------

    def _curves_changed(self) -> None:
        self._schedule_redraw()

    def _schedule_redraw(self) -> None:
        if not self.redraw_timer.isActive():
            self.redraw_timer.start()

    def _redraw(self) -> None:
        if not self.isVisible():
            self._redraw_pending = True  # drawn when the tab is shown
            return
        self._redraw_pending = False
        self.loss_plot.redraw(overlays=False)
        if not self.reads.busy("run"):  # while the open run is read, the loss plot alone refines
            self.rest_timer.start()

    def _redraw_rest(self) -> None:
        """Tokens/s, a frame after the loss plot; the stage comparison and the figures a frame later."""
        if not self.isVisible():
            self._redraw_pending = True
            return
        self.rate_plot.redraw(self.curves, self.loss_plot.x_axis)
        self.report_timer.start()

    def _redraw_report(self) -> None:
        rows = list(self.curves.recent)
        info = self.info if self.current is not None else None
        self.stages.show_report(run_report(info, rows) if info is not None else None)
        self.step_timeline.show_run(info if info is not None and info.engine == "pipeline" else None)
        steps = info.steps if info is not None else 0
        self.show_figures(self.curves, self.status, steps, self._is_live() and self.current == self._live)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.refresh_history()
        if self._redraw_pending:
            self._schedule_redraw()

    # -- controls -----------------------------------------------------------------------------

    def _update_controls(self, *_: object) -> None:
        reason = self.start_block_reason()
        self.start_button.setEnabled(reason is None)
        self.show_note(self.reason_label, reason or "")
        self.stop_button.setEnabled(self._is_live() and not self._stopping)
        self.resume_button.setEnabled(self._launch is None and self._resume_target() is not None)
        self.hf_saver.set_run(self._resume_target())  # an HF run that is not live: Save as HF

    def _resume_target(self) -> Path | None:
        if self._is_live():
            return None  # one job at a time
        path = self.history.selected_path() or self.current
        run = next((r for r in self.history.runs if r.path == path), None)
        return None if run is not None and run.state == RUNNING else path

    def _renew_default_name(self, *_: object, force: bool = False) -> None:
        old, self._default_name = self._default_name, default_run_name(self.state.model)
        if force or self.name_edit.text() in ("", old):
            self.name_edit.setText(self._default_name)

    def _open_selected(self) -> None:
        self.open_run(self.history.selected_path())


def _status_or_none(path: Path) -> RunStatus | None:
    try:
        return read_status(path)
    except InputError:
        return None  # no status yet (the job has not written one)


def _running(status: RunStatus | None) -> bool:
    """Running here and now (a job on another host, alive unknown, counts as running)."""
    return status is not None and status.state == RUNNING and status.alive is not False

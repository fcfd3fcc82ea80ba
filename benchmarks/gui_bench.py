"""GUI responsiveness (not part of the tests): a budget drag, and the idle app.

    python benchmarks/gui_bench.py                       both parts
    python benchmarks/gui_bench.py --part drag           llama-2-70b on 8 simulated H200
    python benchmarks/gui_bench.py --part drag --fake-gpus 8    on 8 fake NVML H100 instead
    python benchmarks/gui_bench.py --part idle --points 1000000 --idle-seconds 30

The app runs offscreen with its real state, worker and views. A 5 ms QTimer
measures the GUI thread: a gap between ticks longer than the interval is a
stall. The drag is real mouse events on one budget bar (press on the handle,
a move every `--move-ms`, release), sweeping the budget down and back up, so
the plan goes feasible -> infeasible -> feasible under the hand. Target: no
stall above 50 ms.

The idle part builds the app as main.py does (8 fake NVML GPUs sampled at
1 Hz, the Monitor and Training tabs), opens a run whose metrics.jsonl holds
`--points` steps (a tiny real run, its metrics then replaced by a synthetic
loss curve), and measures the process's CPU time (every thread: the GUI, the
sampler) per wall second while nobody touches it, with the Training tab shown
and then the Monitor tab. Target: under 5% of one core.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("ALLOT_CONFIG_DIR", tempfile.mkdtemp(prefix="allot-bench-"))

from PySide6.QtCore import QElapsedTimer, QPoint, Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

TICK_MS = 5
TARGET_MS = 50.0
IDLE_TARGET_PERCENT = 5.0


class StallMeter:
    """Gaps between ticks of a fast QTimer: how long the GUI thread was unavailable."""

    def __init__(self) -> None:
        self.gaps_ms: list[float] = []
        self._clock = QElapsedTimer()
        self._last = 0.0
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._tick)

    def start(self) -> None:
        self.gaps_ms.clear()
        self._clock.start()
        self._last = self._clock.nsecsElapsed() / 1e6
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def _tick(self) -> None:
        now = self._clock.nsecsElapsed() / 1e6
        self.gaps_ms.append(now - self._last)
        self._last = now

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.gaps_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


from gui.app import freeze_startup_objects  # noqa: E402


def build_window(args: argparse.Namespace):
    from core.model.config import ModelChoice
    from core.planning.setup import TrainingSetup
    from core.project import Project, simulated_entry
    from gui.app import create_window, discover_inventory
    from gui.theme import apply_theme

    apply_theme(QApplication.instance())
    window = create_window(discover=lambda: discover_inventory(args.fake_gpus or None), reopen_last=False)
    window.unsaved_policy = "discard"
    setup = TrainingSetup(micro_batch_size=1, seq_len=4096, micro_batches=16, recompute=True)
    if args.fake_gpus:
        devices = window.state.devices
    else:
        taken: set[str] = set()
        devices = []
        for _ in range(8):
            devices.append(simulated_entry(args.gpu, taken))
            taken.add(devices[-1].name)
        devices = (*devices, *(replace(e, included=False) for e in window.state.devices if e.kind == "host"))
    window.state.load(Project(devices=tuple(devices), model=ModelChoice(name=args.model), setup=setup))
    window.resize(1600, 1000)
    window.show()
    return window


def wait_until(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.002)
    return bool(condition())


def drag(window, args: argparse.Namespace, meter: StallMeter) -> dict[str, float]:
    """Press on the first bar's handle, sweep down and back up, release; measure."""
    state = window.state
    name = state.included_devices[0].name
    bar = window.budget_bars.bar(name)
    y = bar.height() // 2
    full_x = bar.x_for_bytes(bar.budget_bytes)
    low_x = bar.x_for_bytes(bar.total_bytes * args.low)
    moves = max(2, int(args.seconds * 1000 / args.move_ms))
    # down to the low budget and most of the way back, still moving at the release
    positions = [low_x + (full_x - low_x) * abs(math.cos(0.9 * math.pi * i / (moves - 1))) for i in range(moves)]
    solves_before, plans = state.worker.solves, [0]
    state.plan_changed.connect(lambda: plans.__setitem__(0, plans[0] + 1))
    meter.start()
    QTest.mousePress(bar, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(round(full_x), y))
    started = time.perf_counter()
    for i, x in enumerate(positions):
        QTest.mouseMove(bar, QPoint(round(x), y))
        # wait until this move's time slot, running the event loop like a real session
        while time.perf_counter() < started + (i + 1) * args.move_ms / 1000:
            QApplication.processEvents()
            time.sleep(0.001)
    QTest.mouseRelease(bar, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(round(positions[-1]), y))
    released = time.perf_counter()
    wait_until(lambda: not state.busy, 30)
    settled = time.perf_counter()
    wait_until(lambda: False, 0.2)  # a little idle time after the final plan, still measured
    meter.stop()
    return {"moves": moves, "requests": moves, "solves": state.worker.solves - solves_before,
            "plans shown": plans[0], "drag s": released - started, "final plan ms": (settled - released) * 1e3}


def synthetic_run(root: Path, points: int) -> Path:
    """A finished run of `points` steps: a real 2-step gpt-nano run (its config, plan and
    status are the real format), whose metrics are then replaced by a long synthetic curve."""
    import json
    import random

    import numpy as np

    from core.planning.setup import TrainingSetup
    from core.training.config import TrainConfig
    from core.training.launcher import start_run, wait_run
    from core.training.run_dir import RunPaths, atomic_write_json, read_json, write_status

    corpus = root / "corpus.txt"
    rng = random.Random(0)
    corpus.write_text("\n".join(" ".join(rng.choice(("def", "return", "self", "x", "for", "in", "if"))
                                         for _ in range(8)) for _ in range(4000)) + "\n")
    setup = TrainingSetup(precision="fp32", optimizer="adamw", micro_batch_size=4, seq_len=32, micro_batches=2)
    config = TrainConfig(model="gpt-nano", devices="cpu:1GiB", engine="local", steps=2, data=str(corpus),
                         setup=setup, eval_interval=1, checkpoint_interval=1, log_interval=1)
    run = root / "runs" / "million"
    start_run(config, run, emit=lambda _: None)
    if wait_run(run, timeout_s=300).state != "finished":
        raise SystemExit(f"the seed run did not finish: see {run / 'train.log'}")
    paths = RunPaths(run)
    steps = np.arange(1, points + 1)
    loss = 1.2 + 4.3 * np.exp(-steps / (points / 8)) + 0.08 * np.random.default_rng(0).standard_normal(points)
    started = 1.8e9
    with open(paths.metrics, "w", encoding="utf-8") as out:
        for step, value in zip(steps.tolist(), loss.tolist()):
            row = {"step": step, "time": started + 0.5 * step, "elapsed_s": 0.5 * step, "loss": value,
                   "lr": 1e-3, "tokens": 256 * step, "tokens_per_s": 16000.0, "step_time_s": 0.5}
            if step % 500 == 0:
                row["val_loss"] = value + 0.05
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
    stored = read_json(paths.config, "run config")
    stored["config"]["steps"] = points
    atomic_write_json(paths.config, stored)
    write_status(paths, step=points, steps=points, last_loss=float(loss[-1]))
    return run


def idle_cpu_percent(seconds: float) -> float:
    """Process CPU seconds per wall second x 100, the event loop running and untouched."""
    cpu, wall = time.process_time(), time.perf_counter()
    wait_until(lambda: False, seconds)
    return (time.process_time() - cpu) / (time.perf_counter() - wall) * 100


def idle(args: argparse.Namespace) -> list[tuple[str, str]]:
    from core.devices.fake_nvml import fake_gateway
    from gui.app import attach_live_views, create_window, discover_inventory
    from gui.theme import apply_theme

    work = Path(tempfile.mkdtemp(prefix="allot-idle-"))
    made = time.perf_counter()
    run = synthetic_run(work, args.points)
    made_s = time.perf_counter() - made
    size_mb = (run / "metrics.jsonl").stat().st_size / 1e6
    apply_theme(QApplication.instance())
    gateway = fake_gateway(8)
    inventory = discover_inventory(gateway=gateway)
    window = create_window(discover=lambda: inventory, reopen_last=False)
    window.unsaved_policy = "discard"
    sampler = attach_live_views(window, gateway, work / "runs", inventory)
    window.resize(1600, 1000)
    window.show()
    window.state.replan()
    wait_until(lambda: window.state.comparison is not None or bool(window.state.error), 180)
    training = window.training_slot
    window.tabs.setCurrentWidget(training)
    opened = time.perf_counter()
    training.open_run(run)
    wait_until(lambda: False, 1.0)  # the first redraw and the history table
    open_s = time.perf_counter() - opened
    shown = len(training.curves.loss)
    freeze_startup_objects()
    training_cpu = idle_cpu_percent(args.idle_seconds)
    window.tabs.setCurrentWidget(window.monitor_slot)
    wait_until(lambda: False, 1.0)
    monitor_cpu = idle_cpu_percent(args.idle_seconds)
    sampler.stop()
    training.shutdown()
    window.close()
    worst = max(training_cpu, monitor_cpu)
    verdict = "PASS" if worst < IDLE_TARGET_PERCENT else "FAIL"
    return [("GPUs sampled", f"{len(sampler.gpu_indices)} fake, every {sampler.interval_s:g} s"),
            ("loss curve", f"{shown:,} points ({size_mb:.0f} MB metrics.jsonl; seed run and writing {made_s:.1f} s)"),
            ("open the run (read + first draw)", f"{open_s:.1f} s"),
            ("idle CPU, Training tab shown", f"{training_cpu:.2f}% of one core over {args.idle_seconds:g} s"),
            ("idle CPU, Monitor tab shown", f"{monitor_cpu:.2f}% of one core over {args.idle_seconds:g} s"),
            ("verdict", f"{verdict}: target under {IDLE_TARGET_PERCENT:g}% of one core")]


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(key) for key, _ in rows)
    print(f"{'measure':<{width}}  value\n{'-' * width}  {'-' * 40}")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llama-2-70b")
    parser.add_argument("--gpu", default="H200", help="catalog GPU simulated 8 times")
    parser.add_argument("--fake-gpus", type=int, default=0, help="plan on N fake NVML GPUs instead")
    parser.add_argument("--seconds", type=float, default=4.0, help="how long the drag lasts")
    parser.add_argument("--move-ms", type=float, default=8.0, help="time between mouse moves")
    parser.add_argument("--low", type=float, default=0.55, help="lowest budget reached, as a share of memory")
    parser.add_argument("--part", choices=("drag", "idle", "both"), default="both")
    parser.add_argument("--points", type=int, default=1_000_000, help="idle: steps in the loss curve")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="idle: how long each measure lasts")
    args = parser.parse_args(argv)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    if args.part in ("drag", "both") and drag_part(args) != 0:
        return 1
    if args.part in ("idle", "both"):
        print("\nIdle app: 8 fake GPUs at 1 Hz, a long loss curve")
        print_table(idle(args))
    app.processEvents()
    return 0


def drag_part(args: argparse.Namespace) -> int:
    app = QApplication.instance()
    started = time.perf_counter()
    window = build_window(args)
    freeze_startup_objects()  # as run_app does
    window.state.replan()
    if not wait_until(lambda: window.state.comparison is not None or bool(window.state.error), 180):
        print("the first plan did not arrive", file=sys.stderr)
        return 1
    first_plan_s = time.perf_counter() - started
    meter = StallMeter()
    figures = drag(window, args, meter)
    window.close()
    app.processEvents()
    rows = [("model / devices", f"{args.model} on {len(window.state.included_devices)} devices"),
            ("first plan (incl. graph build)", f"{first_plan_s:.1f} s"),
            ("drag", f"{figures['moves']} mouse moves over {figures['drag s']:.1f} s"),
            ("solves completed during drag", f"{figures['solves']} (plans shown: {figures['plans shown']})"),
            ("GUI ticks measured", f"{len(meter.gaps_ms)} at {TICK_MS} ms"),
            ("max stall (longest tick gap)", f"{max(meter.gaps_ms, default=0):.1f} ms"),
            ("p99 tick gap", f"{meter.percentile(0.99):.1f} ms"),
            ("p50 tick gap", f"{meter.percentile(0.50):.1f} ms"),
            ("last drag event -> final plan", f"{figures['final plan ms']:.0f} ms")]
    print(f"Budget drag: {args.model}")
    print_table(rows)
    worst = max(meter.gaps_ms, default=0)
    print(f"\n{'PASS' if worst <= TARGET_MS else 'FAIL'}: max stall {worst:.1f} ms (target {TARGET_MS:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GUI responsiveness (not part of the tests): a budget drag, and the idle app.

    python3 benchmarks/gui_bench.py                       both parts
    python3 benchmarks/gui_bench.py --part drag           llama-2-70b on 8 simulated H200
    python3 benchmarks/gui_bench.py --part drag --fake-gpus 8    on 8 fake NVML H100 instead
    python3 benchmarks/gui_bench.py --part idle --points 1000000 --idle-seconds 30
    python3 benchmarks/gui_bench.py --part parse            JSON lines: json.loads vs the columns parser

The app runs offscreen with its real state, worker and views. A 5 ms QTimer
measures the GUI thread: a gap between ticks longer than the interval is a
stall. The drag is real mouse events on one budget bar (press on the handle,
a move every `--move-ms`, release), sweeping the budget down and back up, so
the plan goes feasible -> infeasible -> feasible under the hand, `--drags`
times from the same budget. Target: no stall above 50 ms in the median sweep
(one sweep's worst frame ranged 28-66 ms on the same code).

The idle part builds the app as main.py does (8 fake NVML GPUs sampled at 1
Hz, the Monitor and Training tabs), opens a run whose metrics.jsonl holds
`--points` steps (a tiny real run, its metrics then replaced by a synthetic
loss curve) with the same 5 ms tick running: the longest stall while it opens
(target 50 ms), the time to the first curve (target 1 s) and to the full one,
and the process's memory (RSS) before, at its peak and after; then the longest
stall while two copies of the run are overlaid (each read in the background),
while the x axis switches to training time and back, and while the smoothing
is swept over all three runs (same target). Then it measures the process's CPU
time (every thread: the GUI, the sampler) per wall second while nobody touches
it, with the Training tab shown and then the Monitor tab, three times each;
the median counts. Target: 3% of one core.

The parse part times ways to read metrics.jsonl rows into columns on the
first `--parse-rows` rows of such a file.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("ALLOT_CONFIG_DIR", tempfile.mkdtemp(prefix="allot-bench-"))

from gui_loop import TICK_MS, StallMeter, idle_cpu_percent, paced, rss_mb, run_loop, wait_until
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

TARGET_MS = 50.0
IDLE_TARGET_PERCENT = 3.0
FIRST_CURVE_TARGET_S = 1.0
IDLE_REPEATS = 3
DRAG_REPEATS = 5


from cli.numbers import positive_int  # noqa: E402
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

    def count_plan() -> None:
        plans[0] += 1

    state.plan_changed.connect(count_plan)
    meter.start()
    QTest.mousePress(bar, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(round(full_x), y))
    started = time.perf_counter()
    moves_in_loop = [lambda x=x: QTest.mouseMove(bar, QPoint(round(x), y)) for x in positions]
    run_loop(paced(moves_in_loop, args.move_ms / 1000), 600)  # a move every move_ms, in the event loop
    QTest.mouseRelease(bar, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(round(positions[-1]), y))
    released = time.perf_counter()
    wait_until(lambda: not state.busy, 30)
    settled = time.perf_counter()
    wait_until(lambda: False, 0.2)  # a little idle time after the final plan, still measured
    meter.stop()
    state.plan_changed.disconnect(count_plan)  # the next sweep counts its own
    return {"moves": moves, "requests": moves, "solves": state.worker.solves - solves_before,
            "plans shown": plans[0], "drag s": released - started, "final plan ms": (settled - released) * 1e3}


def synthetic_run(root: Path, points: int) -> Path:
    """A finished run of `points` steps: a real 2-step gpt-nano run (its config, plan and
    status are the real format), whose metrics are then replaced by a long synthetic curve."""
    import json
    import random

    import numpy as np

    from core.planning.device_resolution import resolve_devices
    from core.planning.setup import TrainingSetup
    from core.system.durable import read_json
    from core.training.config import TrainConfig
    from core.training.launcher import start_run, wait_run
    from core.training.run_dir import RunPaths, atomic_write_json, write_status

    corpus = root / "corpus.txt"
    rng = random.Random(0)
    corpus.write_text("\n".join(" ".join(rng.choice(("def", "return", "self", "x", "for", "in", "if"))
                                         for _ in range(8)) for _ in range(4000)) + "\n")
    setup = TrainingSetup(precision="fp32", optimizer="adamw", micro_batch_size=4, seq_len=32, micro_batches=2)
    config = TrainConfig(model="gpt-nano", devices=resolve_devices("cpu:1GiB", "fp32"), engine="local", steps=2, data=str(corpus),
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


def open_long_run(training, run: Path) -> dict[str, float]:
    """Open the run with the 5 ms tick running: stall, first and full curve, memory."""
    import gc

    gc.collect()
    before_mb, peak_mb = rss_mb(), 0.0
    meter = StallMeter()
    meter.start()
    opened = time.perf_counter()
    training.open_run(run)
    first_s = full_s = math.nan
    plot = training.loss_plot
    polls = [0]

    def opened_yet() -> bool:
        nonlocal first_s, full_s, peak_mb
        now = time.perf_counter()
        if math.isnan(first_s) and plot.train_raw.getOriginalDataset()[0] is not None \
                and len(plot.train_raw.getOriginalDataset()[0]):
            first_s = now - opened
        if training._read is not None and not training.reads.busy("run"):
            full_s = now - opened
            return True
        polls[0] += 1
        if polls[0] % 10 == 0:
            peak_mb = max(peak_mb, rss_mb())  # every 10 ms
        return False

    run_loop(opened_yet, 600)
    wait_until(lambda: False, 0.3)  # the last redraw, still measured
    meter.stop()
    gc.collect()
    return {"first s": first_s, "full s": full_s, "max stall ms": max(meter.gaps_ms, default=0.0),
            "p99 ms": meter.percentile(0.99), "ticks": len(meter.gaps_ms), "before mb": before_mb,
            "peak mb": max(peak_mb, before_mb), "after mb": rss_mb()}


def handle_long_runs(training, run: Path) -> dict[str, float]:
    """The longest stall while overlaying two more copies of the run (read in the background),
    switching the x axis to training time and back, and sweeping the smoothing over all three."""
    import shutil

    meter = StallMeter()
    copies = [training.runs_dir / f"{run.name}-copy-{n}" for n in (1, 2)]
    for copy in copies:
        shutil.copytree(run, copy)
    training.refresh_history()
    stalls = {}

    def measured(action, done, settle_s: float = 0.3) -> float:
        wait_until(lambda: False, 0.3)
        meter.start()
        action()
        wait_until(done, 600)
        wait_until(lambda: False, settle_s)  # the last redraw, still measured
        meter.stop()
        return max(meter.gaps_ms, default=0.0)

    def overlay() -> None:
        for copy in copies:
            training.history.set_overlaid(copy.resolve(), True)

    stalls["overlay"] = measured(overlay, lambda: not any(
        training.reads.busy(("overlay", copy.resolve())) for copy in copies))
    plot = training.loss_plot

    def switch_axis() -> None:
        choices = [lambda key=key: plot.x_axis_box.setCurrentIndex(plot.x_axis_box.findData(key))
                   for key in ("time", "step")]
        run_loop(paced(choices, 0.5), 60)

    stalls["x axis"] = measured(switch_axis, lambda: True)

    def sweep_smoothing() -> None:
        start = plot.smoothing_slider.value()
        values = [*range(start, -1, -3), *range(0, 100, 3), *range(99, start - 1, -3)]
        steps = [lambda value=value: plot.smoothing_slider.setValue(value) for value in values]
        run_loop(paced(steps, 0.02), 60)  # as a drag of the slider: a value every 20 ms

    stalls["smoothing"] = measured(sweep_smoothing, lambda: True)
    return stalls


def idle(args: argparse.Namespace) -> list[tuple[str, str]]:
    from core.devices.fake_nvml import fake_gateway
    from gui.app import attach_live_views, create_window, discover_inventory
    from gui.theme import apply_theme

    work = Path(tempfile.mkdtemp(prefix="allot-idle-"))
    made = time.perf_counter()
    run = Path(args.run).resolve() if args.run else synthetic_run(work, args.points)
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
    freeze_startup_objects()
    wait_until(lambda: False, 1.0)
    opening = open_long_run(training, run)
    if args.screenshot:
        training.grab().save(args.screenshot)
    shown = len(training.curves.loss)
    points = len(training.loss_plot.train_raw.getOriginalDataset()[0])
    handling = handle_long_runs(training, run)
    training_cpu, monitor_cpu = [], []
    for _ in range(IDLE_REPEATS):
        window.tabs.setCurrentWidget(training)
        wait_until(lambda: False, 1.0)
        training_cpu.append(idle_cpu_percent(args.idle_seconds))
        window.tabs.setCurrentWidget(window.monitor_slot)
        wait_until(lambda: False, 1.0)
        monitor_cpu.append(idle_cpu_percent(args.idle_seconds))
    sampler.stop()
    training.shutdown()
    window.close()
    worst = max(statistics.median(training_cpu), statistics.median(monitor_cpu))
    stall_ok = max(opening["max stall ms"], *handling.values()) <= TARGET_MS and \
        opening["first s"] <= FIRST_CURVE_TARGET_S

    def runs(values: list[float]) -> str:
        return (f"{statistics.median(values):.2f}% median of one core ({', '.join(f'{v:.2f}' for v in values)}; "
                f"{args.idle_seconds:g} s each)")

    return [("GPUs sampled", f"{len(sampler.gpu_indices)} fake, every {sampler.interval_s:g} s"),
            ("run opened", f"{shown:,} steps ({size_mb:.0f} MB metrics.jsonl; "
                           + (f"from {args.run})" if args.run else f"seed run and writing {made_s:.1f} s)")),
            ("points drawn (loss)", f"{points:,} (min and max of each bucket)"),
            ("max stall while opening", f"{opening['max stall ms']:.1f} ms ({opening['ticks']:.0f} ticks at "
                                        f"{TICK_MS} ms, p99 {opening['p99 ms']:.1f} ms)"),
            ("max stall: 2 overlays read, x axis, smoothing", " / ".join(
                f"{handling[key]:.1f}" for key in ("overlay", "x axis", "smoothing")) + " ms (same run copied)"),
            ("time to first curve", f"{opening['first s']:.2f} s"),
            ("time to full curve", f"{opening['full s']:.1f} s"),
            ("memory (RSS) before / peak / after", f"{opening['before mb']:.0f} / {opening['peak mb']:.0f} / "
                                                   f"{opening['after mb']:.0f} MB"),
            ("idle CPU, Training tab shown", runs(training_cpu)),
            ("idle CPU, Monitor tab shown", runs(monitor_cpu)),
            ("verdict", f"{'PASS' if stall_ok else 'FAIL'}: stall target {TARGET_MS:.0f} ms, first curve "
                        f"{FIRST_CURVE_TARGET_S:g} s; {'PASS' if worst <= IDLE_TARGET_PERCENT else 'FAIL'}: "
                        f"idle under {IDLE_TARGET_PERCENT:g}% of one core")]


def parse(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Seconds per million rows for each way of reading rows into columns."""
    import json

    import numpy as np

    from core.runs.columns import DENSE, SPARSE, parse_lines

    work = Path(tempfile.mkdtemp(prefix="allot-parse-"))
    run = synthetic_run(work, args.parse_rows)
    data = (run / "metrics.jsonl").read_bytes()
    keys = DENSE + SPARSE

    def with_loads(loads) -> None:
        rows = [loads(line) for line in data.splitlines()]
        for key in keys:
            np.array([row.get(key, np.nan) for row in rows], dtype=np.float64)

    ways = {"json.loads per line, then columns": lambda: with_loads(json.loads),
            "core.runs.columns.parse_lines (re + numpy)": lambda: parse_lines(data)}
    try:
        import orjson  # not a dependency: measured only where installed

        ways["orjson.loads per line, then columns"] = lambda: with_loads(orjson.loads)
    except ImportError:
        pass
    rows = []
    for name, way in ways.items():
        times = []
        for _ in range(3):
            started = time.perf_counter()
            way()
            times.append(time.perf_counter() - started)
        rows.append((name, f"{sorted(times)[1] / args.parse_rows * 1e6:.2f} us a row (median of 3)"))
    return [("rows", f"{args.parse_rows:,} ({len(data) / 1e6:.0f} MB)"), *rows]


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
    parser.add_argument("--drags", type=positive_int, default=DRAG_REPEATS,
                        help="drag: sweeps measured; one sweep's worst frame varies by 2x, so the median counts")
    parser.add_argument("--part", choices=("drag", "idle", "both", "parse"), default="both")
    parser.add_argument("--points", type=int, default=1_000_000, help="idle: steps in the loss curve")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="idle: how long each measure lasts")
    parser.add_argument("--screenshot", help="idle: save the Training tab once the run is read (PNG)")
    parser.add_argument("--run", help="idle: open this run directory (one made by an earlier run) instead of seeding")
    parser.add_argument("--parse-rows", type=int, default=200_000, help="parse: rows timed")
    args = parser.parse_args(argv)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    if args.part in ("drag", "both") and drag_part(args) != 0:
        return 1
    if args.part in ("idle", "both"):
        print("\nOpening a long run, then the idle app: 8 fake GPUs at 1 Hz")
        print_table(idle(args))
    if args.part == "parse":
        print("Reading metrics.jsonl rows into columns")
        print_table(parse(args))
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
    state = window.state
    name = state.included_devices[0].name
    start_budget = window.budget_bars.bar(name).budget_bytes
    sweeps: list[tuple[dict[str, float], StallMeter]] = []
    for _ in range(args.drags):
        state.set_budget(name, start_budget)  # each sweep from the same budget
        wait_until(lambda: not state.busy, 30)
        meter = StallMeter()
        sweeps.append((drag(window, args, meter), meter))
    window.close()
    app.processEvents()
    worsts = [max(meter.gaps_ms, default=0.0) for _, meter in sweeps]
    median = sorted(worsts)[(len(worsts) - 1) // 2]  # a sweep's own figure (the lower middle of an even count)
    figures, meter = sweeps[worsts.index(median)]
    rows = [("model / devices", f"{args.model} on {len(state.included_devices)} devices"),
            ("first plan (incl. graph build)", f"{first_plan_s:.1f} s"),
            ("drag", f"{len(sweeps)} sweeps of {figures['moves']} mouse moves over {figures['drag s']:.1f} s"),
            ("max stall of each sweep", ", ".join(f"{worst:.1f}" for worst in worsts) + " ms"),
            ("max stall (median sweep)", f"{median:.1f} ms"),
            ("median sweep: solves completed", f"{figures['solves']} (plans shown: {figures['plans shown']})"),
            ("median sweep: GUI ticks measured", f"{len(meter.gaps_ms)} at {TICK_MS} ms"),
            ("median sweep: p99 / p50 tick gap", f"{meter.percentile(0.99):.1f} / {meter.percentile(0.50):.1f} ms"),
            ("median sweep: last move -> final plan", f"{figures['final plan ms']:.0f} ms")]
    print(f"Budget drag: {args.model}")
    print_table(rows)
    verdict = "PASS" if median <= TARGET_MS else "FAIL"
    print(f"\n{verdict}: max stall {median:.1f} ms, median of {len(sweeps)} sweeps (target {TARGET_MS:.0f} ms)")
    return 0

if __name__ == "__main__":
    sys.exit(main())

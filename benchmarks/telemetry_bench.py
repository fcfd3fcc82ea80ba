"""What live telemetry costs: sampler CPU time per wall second, and reading history.

    python3 benchmarks/telemetry_bench.py            about 45 s
    python3 benchmarks/telemetry_bench.py --quick    about 15 s

Eight fake GPUs (core.devices.fake_nvml), so the figures are Allot's own overhead
(gateway, snapshots, ring buffers, psutil) without the driver's time inside
NVML calls. Each figure is the median of several runs. Target: under 1 % of
one core at 1 Hz.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.devices.fake_nvml import fake_gateway
from core.devices.telemetry import TelemetrySampler

GPUS = 8


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def drive(hz: float, seconds: float) -> tuple[float, float]:
    """Sample at `hz` on a thread for `seconds`; (thread CPU, process CPU) per wall second.

    The sampler's own thread refuses intervals under 0.2 s (5 Hz), so this
    loop calls the same `sample_once` at the benchmark's rate.
    """
    sampler = TelemetrySampler(fake_gateway(GPUS), interval_s=1.0)
    sampler.set_watched_pids([os.getpid()])
    sampler.sample_once()  # first tick: handles, static facts, process names
    result: dict[str, float] = {}

    def loop() -> None:
        started_cpu, started = time.thread_time(), time.monotonic()
        due = started
        while True:
            sampler.sample_once()
            due += 1.0 / hz
            now = time.monotonic()
            if due - started >= seconds:
                break
            time.sleep(max(0.0, due - now))
        result["thread"] = (time.thread_time() - started_cpu) / (time.monotonic() - started)

    cpu, wall = process_cpu_s(), time.monotonic()
    thread = threading.Thread(target=loop)
    thread.start()
    thread.join()
    return result["thread"], (process_cpu_s() - cpu) / (time.monotonic() - wall)


def real_thread(interval_s: float, seconds: float) -> float:
    """The sampler's own thread: process CPU per wall second while it runs."""
    sampler = TelemetrySampler(fake_gateway(GPUS), interval_s=interval_s)
    sampler.sample_once()
    cpu, wall = process_cpu_s(), time.monotonic()
    sampler.start()
    time.sleep(seconds)
    sampler.stop()
    return (process_cpu_s() - cpu) / (time.monotonic() - wall)


def timed(fn: Callable[[], object], repeat: int = 200) -> float:
    """Median seconds of one call."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def history_costs(interval_s: float) -> list[tuple[str, float]]:
    """Fill one hour at `interval_s`, then time reading it back for all 8 GPUs."""
    sampler = TelemetrySampler(fake_gateway(GPUS), interval_s=interval_s, history_s=3600)
    row = sampler.sample_once()  # one real row, repeated: reading does not care what is in it
    buffers = [sampler.gpu_history(i) for i in sampler.gpu_indices]
    for buffer in buffers:
        values = buffer.last(1)[0, 1:].copy()
        for tick in range(buffer.capacity):
            buffer.append(row.time_s + tick * interval_s, values)
    megabytes = sum(b.nbytes for b in buffers) / 1e6
    label = f"{len(buffers[0])} rows x {GPUS} GPUs, {megabytes:.1f} MB"
    return [
        (f"views of the whole hour ({label})", timed(lambda: [b.last() for b in buffers])),
        ("one column of the hour, views", timed(lambda: [b.column("power_watts") for b in buffers])),
        ("copy of the whole hour", timed(lambda: [b.last(copy=True) for b in buffers], 50)),
        ("last 60 rows, copies", timed(lambda: [b.last(60, copy=True) for b in buffers])),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    seconds = {1: 3.0, 10: 1.0} if args.quick else {1: 8.0, 10: 3.0}

    print(f"Sampler CPU, {GPUS} fake GPUs, median of {args.runs} runs "
          "(% of one core = CPU seconds per wall second x 100)")
    print(f"{'rate':>6}  {'sampler thread':>15}  {'whole process':>14}  {'per tick':>10}")
    for hz, span in seconds.items():
        runs = [drive(hz, span) for _ in range(args.runs)]
        thread = statistics.median(r[0] for r in runs)
        process = statistics.median(r[1] for r in runs)
        print(f"{hz:>4} Hz  {thread * 100:>14.3f}%  {process * 100:>13.3f}%  "
              f"{thread / hz * 1e3:>7.3f} ms")
    own = statistics.median(real_thread(1.0, seconds[1] / 2) for _ in range(args.runs))
    print(f"TelemetrySampler.start() at 1 Hz, whole process: {own * 100:.3f}% of one core")

    for interval_s in (1.0, 0.2):
        print(f"\nReading one hour of history at {1 / interval_s:g} Hz (median per read, all 8 GPUs)")
        for what, seconds_taken in history_costs(interval_s):
            print(f"  {what:<58} {seconds_taken * 1e6:>10.1f} µs")


if __name__ == "__main__":
    main()

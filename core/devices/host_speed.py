"""The host CPU's matmul speed: measured robustly once per machine, then read from a cache.

One short matmul timed under whatever else runs gave 99.5 ms in one run and
852 ms in the next for the same stage. So the speed is the best of several
short runs (load only ever slows a run down, so the fastest is the closest to
what the CPU can do), and it is kept per machine in the user cache dir
($ALLOT_CACHE_DIR, else $XDG_CACHE_HOME/allot, else ~/.cache/allot) with the
date and the torch version; a new torch, another thread count or a file older
than MAX_AGE_DAYS measures again. Delete host-speed.json to force it.
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.disk_cache import cache_root
from core.durable import atomic_write_text

CACHE_FILE = "host-speed.json"
MAX_AGE_DAYS = 30
RUNS = 7  # short runs; the best is kept
RUN_SECONDS = 0.03


@dataclass(frozen=True)
class HostSpeed:
    """The host's achieved fp32 matmul TFLOP/s, and where the figure comes from."""

    peak_tflops: float
    measured_on: str  # ISO date
    torch_version: str
    threads: int
    machine: str
    cached: bool  # read from the cache file (False: measured by this process)

    @property
    def source(self) -> str:
        """'measured 2026-11-30 (torch 2.13.0, 2 threads)': for tooltips and reports."""
        return f"measured {self.measured_on} (torch {self.torch_version}, {self.threads} threads)"


def machine_key() -> str:
    """This machine as the cache knows it: host name, CPU and core count."""
    return f"{platform.node()}|{platform.processor() or platform.machine()}|{os.cpu_count()}"


def best_of_runs(run_once: Any, runs: int = RUNS) -> float:
    """The highest of `runs` measurements (each a rate: load can only lower it)."""
    return max(run_once() for _ in range(runs))


def _matmul_tflops(size: int = 512, seconds: float = RUN_SECONDS) -> float:
    """One short run: fp32 TFLOP/s of repeated square matmuls for about `seconds`.

    Rated by wall time and by the CPU time the process got (times the threads
    torch uses), whichever is faster: on a busy machine the process waits for a
    core, and the wall clock counts that wait as if the CPU were slow.
    """
    import torch  # only the CPU path needs torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up: thread pool and caches
    threads = max(1, torch.get_num_threads())
    runs, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while True:
        torch.mm(a, b)
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and runs >= 2:
            cpu = time.process_time() - cpu_started
            flops = 2 * size**3 * runs
            by_cpu = flops * threads / cpu / 1e12 if cpu > 0 else 0.0
            return max(flops / elapsed / 1e12, min(by_cpu, flops * threads / elapsed / 1e12))


def read_cached(path: Path, key: str, torch_version: str, threads: int, today: datetime.date) -> HostSpeed | None:
    """The cached speed for this machine, torch and thread count, if fresh; None otherwise."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))["machines"][key]
        speed = HostSpeed(float(entry["peak_tflops"]), str(entry["measured_on"]), str(entry["torch_version"]),
                          int(entry["threads"]), key, cached=True)
        age = today - datetime.date.fromisoformat(speed.measured_on)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if speed.torch_version != torch_version or speed.threads != threads or age.days > MAX_AGE_DAYS:
        return None
    if not speed.peak_tflops > 0:
        return None
    return speed


def write_cached(path: Path, speed: HostSpeed) -> None:
    """Add this machine's entry (atomically: other processes may read at the same time); best effort."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        machines = data["machines"] if isinstance(data.get("machines"), dict) else {}
    except (OSError, ValueError, AttributeError):
        machines = {}
    entry = asdict(speed)
    del entry["cached"], entry["machine"]
    machines[speed.machine] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"machines": machines}, indent=2) + "\n")
    except OSError:
        pass  # a read-only home: measured again next time, which is still correct


@functools.lru_cache(maxsize=1)
def host_speed() -> HostSpeed:
    """This machine's speed: from the cache when fresh, else measured (best of RUNS) and cached."""
    # Read without importing torch, so a cached speed keeps a warm plan torch-free.
    version = importlib.metadata.version("torch").split("+")[0]
    threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or (os.cpu_count() or 1)
    path, key, today = cache_root() / CACHE_FILE, machine_key(), datetime.date.today()
    cached = read_cached(path, key, version, threads, today)
    if cached is not None:
        return cached
    speed = HostSpeed(best_of_runs(_matmul_tflops), today.isoformat(), version, threads, key, cached=False)
    write_cached(path, speed)
    return speed


def measure_cpu_tflops() -> float:
    """Achieved fp32 TFLOP/s of the host (see host_speed); what the planner uses for `cpu`."""
    return host_speed().peak_tflops

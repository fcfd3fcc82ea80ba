"""The host CPU's matmul speed: measured robustly once per machine, then read from a cache.

One short matmul timed under whatever else runs gave 99.5 ms in one run and
852 ms in the next for the same stage. So the speed is the best of several
short runs (load only ever slows a run down, so the fastest is the closest to
what the CPU can do), and it is kept per machine in the user cache dir
($ALLOT_CACHE_DIR, else $XDG_CACHE_HOME/allot, else ~/.cache/allot) with the
date and the torch version; a new torch, another thread count or a file older
than MAX_AGE_DAYS measures again. A figure taken under load would stick for
those 30 days, so `remeasure_host_speed` (`main.py devices --measure-host`, the
app's Devices panel) measures again on demand and overwrites the entry.
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

from core.system.disk_cache import cache_root
from core.system.durable import atomic_write_text
from core.units import TFLOP

CACHE_FILE = "host-speed.json"
MAX_AGE_DAYS = 30
RUNS = 7  # short runs; the best is kept
RUN_SECONDS = 0.03
REMEASURE_RUNS = 21  # asked for by hand, likely because the first figure looked wrong: take more


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


def host_share_tflops(peak_tflops: float, efficiency: float, shares: int) -> float:
    """One host process's effective speed: the host's peak x efficiency, split between `shares`
    processes that run at the same time (each gets cores // shares threads)."""
    return peak_tflops * efficiency / max(1, shares)


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
            by_cpu = flops * threads / cpu / TFLOP if cpu > 0 else 0.0
            return max(flops / elapsed / TFLOP, min(by_cpu, flops * threads / elapsed / TFLOP))


@dataclass(frozen=True)
class Remeasured:
    """A measurement asked for by hand: the entry it replaced (None: there was none) and the new one."""

    old: HostSpeed | None
    new: HostSpeed
    path: Path  # the cache file written

    @property
    def before_text(self) -> str:
        """'0.0305 TFLOP/s, measured 2026-11-02 (torch 2.13.0, 2 threads)', or 'none cached'."""
        return f"{self.old.peak_tflops:.3g} TFLOP/s, {self.old.source}" if self.old is not None else "none cached"

    @property
    def now_text(self) -> str:
        """'0.0412 TFLOP/s, measured 2026-11-30 (torch 2.13.0, 2 threads) (+35%)'."""
        change = f" ({self.new.peak_tflops / self.old.peak_tflops - 1:+.0%})" if self.old is not None else ""
        return f"{self.new.peak_tflops:.3g} TFLOP/s, {self.new.source}{change}"


def read_entry(path: Path, key: str) -> HostSpeed | None:
    """This machine's cache entry as it is, fresh or not; None if there is none readable."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))["machines"][key]
        speed = HostSpeed(float(entry["peak_tflops"]), str(entry["measured_on"]), str(entry["torch_version"]),
                          int(entry["threads"]), key, cached=True)
        datetime.date.fromisoformat(speed.measured_on)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return speed if speed.peak_tflops > 0 else None


def read_cached(path: Path, key: str, torch_version: str, threads: int, today: datetime.date) -> HostSpeed | None:
    """The cached speed for this machine, torch and thread count, if fresh; None otherwise."""
    speed = read_entry(path, key)
    if speed is None or speed.torch_version != torch_version or speed.threads != threads:
        return None
    age = today - datetime.date.fromisoformat(speed.measured_on)
    return speed if age.days <= MAX_AGE_DAYS else None


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


def _torch_version_and_threads() -> tuple[str, int]:
    """What a cached figure must match; read without importing torch, so a cached speed keeps a
    warm plan torch-free."""
    version = importlib.metadata.version("torch").split("+")[0]
    return version, int(os.environ.get("OMP_NUM_THREADS") or 0) or (os.cpu_count() or 1)


def _measure_now(runs: int) -> HostSpeed:
    """Measure this machine now (best of `runs`); not cached yet."""
    version, threads = _torch_version_and_threads()
    return HostSpeed(best_of_runs(_matmul_tflops, runs), datetime.date.today().isoformat(), version, threads,
                     machine_key(), cached=False)


@functools.lru_cache(maxsize=1)
def host_speed() -> HostSpeed:
    """This machine's speed: from the cache when fresh, else measured (best of RUNS) and cached."""
    version, threads = _torch_version_and_threads()
    path = cache_root() / CACHE_FILE
    cached = read_cached(path, machine_key(), version, threads, datetime.date.today())
    if cached is not None:
        return cached
    speed = _measure_now(RUNS)
    write_cached(path, speed)
    return speed


def remeasure_host_speed(runs: int = REMEASURE_RUNS) -> Remeasured:
    """Measure the host again now and overwrite this machine's cache entry, whatever its age.

    This process plans with the new figure from then on (`host_speed` reads it again).

    Args:
        runs: short matmul runs; the best is kept (load only ever slows a run down).

    Returns:
        The entry replaced (None if there was none) and the new one.
    """
    path = cache_root() / CACHE_FILE
    old = read_entry(path, machine_key())
    new = _measure_now(runs)
    write_cached(path, new)
    host_speed.cache_clear()
    return Remeasured(old, new, path)


def measure_cpu_tflops() -> float:
    """Achieved fp32 TFLOP/s of the host (see host_speed); what the planner uses for `cpu`."""
    return host_speed().peak_tflops

"""The host CPU's matmul speed, per precision and matmul shape: measured once per machine, then cached.

One short matmul timed under whatever else runs gave 99.5 ms in one run and
852 ms in the next for the same stage. So the speed is the best of several
short runs (load only ever slows a run down, so the fastest is the closest to
what the CPU can do), and it is kept per machine in the user cache dir
($ALLOT_CACHE_DIR, else $XDG_CACHE_HOME/allot, else ~/.cache/allot) with the
date and the torch version; a new torch, another thread count or a file older
than MAX_AGE_DAYS measures again.

A CPU's speed depends on the precision and the shapes (docs/design.md, "Host
speed"): bf16 matmuls run at a few times fp32's speed where the CPU has bf16
instructions and 50-100x slower where it emulates them, and a 2048 x 384 x
1536 matmul runs at another rate than a 512 x 512 square. So each figure is
for one precision and one `MatmulShape` (the four matmuls of one transformer
block of the model, `MatmulShape.of_block`), cached under its own key.

A figure taken on a busy machine is not the machine's speed: when the load
(core.devices.host_load) is high, the measurement takes more runs, and if
the machine is still busy the figure is used but not cached, and its
`source` says so. `remeasure_host_speed` (`main.py devices --measure-host`,
the app's Devices panel) measures again on demand and overwrites the entry.
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.devices.host_load import HostLoad, read_host_load
from core.system.disk_cache import cache_root
from core.system.durable import atomic_write_text
from core.units import TFLOP

CACHE_FILE = "host-speed.json"
MAX_AGE_DAYS = 30
RUNS = 7  # short runs; the best is kept
RUN_SECONDS = 0.03  # each run repeats the shape's matmuls for at least this long
BUDGET_SECONDS = 3.0  # a measurement stops after this long (at least 2 runs): slow bf16 on big shapes
REMEASURE_RUNS = 21  # asked for by hand, likely because the first figure looked wrong: take more
BUSY_RUNS_FACTOR = 3  # on a busy machine: this many times the runs, for a chance at a quiet moment
MAX_ROWS, MAX_D_MODEL, MAX_FFN = 2048, 1024, 4096  # wider matmuls run at the same rate on a CPU
MAX_SET_FLOPS = 2e9  # one set of a block's matmuls: fewer rows where the widths are large


@dataclass(frozen=True)
class MatmulShape:
    """The matmuls of one transformer block, forward: `rows` tokens of a micro-batch times
    d_model x 3 d_model (q, k, v), d_model x d_model (out), d_model x ffn and ffn x d_model (MLP)."""

    rows: int
    d_model: int
    ffn: int

    @property
    def label(self) -> str:
        """'2048x384x1536': rows x d_model x ffn, the cache key's shape part."""
        return f"{self.rows}x{self.d_model}x{self.ffn}"

    @property
    def matmuls(self) -> tuple[tuple[int, int, int], ...]:
        """(m, k, n) of each matmul of the block."""
        d, f = self.d_model, self.ffn
        return ((self.rows, d, 3 * d), (self.rows, d, d), (self.rows, d, f), (self.rows, f, d))

    @property
    def flops(self) -> float:
        return float(sum(2 * m * k * n for m, k, n in self.matmuls))

    @classmethod
    def of_block(cls, tokens: int, d_model: int, ffn: int) -> MatmulShape:
        """A model's block at `tokens` per micro-batch, widths capped at MAX_D_MODEL/MAX_FFN and rows
        at MAX_ROWS and at what keeps one set of the matmuls under MAX_SET_FLOPS (64 rows at least)."""
        d, f = max(1, min(d_model, MAX_D_MODEL)), max(1, min(ffn, MAX_FFN))
        per_row = cls(1, d, f).flops
        rows = max(1, min(tokens, MAX_ROWS, max(64, int(MAX_SET_FLOPS // per_row))))
        return cls(rows, d, f)


SQUARE = MatmulShape(512, 512, 512)  # where no model is known (a device list before a model)


@dataclass(frozen=True)
class HostSpeed:
    """The host's achieved matmul TFLOP/s in one precision and shape, and where the figure comes from."""

    peak_tflops: float
    measured_on: str  # ISO date
    torch_version: str
    threads: int
    machine: str
    cached: bool  # read from the cache file (False: measured by this process)
    precision: str = "fp32"
    shape: str = SQUARE.label
    busy_note: str = ""  # measured on a busy machine, so not cached: "load 7.9 on 2 cores"

    @property
    def source(self) -> str:
        """'measured 2026-11-30 (torch 2.13.0, 2 threads, bf16 2048x384x1536)': for tooltips and reports;
        a figure from a busy machine says so."""
        busy = f"; busy machine ({self.busy_note}): not cached, measured again next time" if self.busy_note else ""
        return (f"measured {self.measured_on} (torch {self.torch_version}, {self.threads} threads, "
                f"{self.precision} {self.shape}){busy}")


def host_share_tflops(peak_tflops: float, efficiency: float, shares: int) -> float:
    """One host process's effective speed: the host's peak x efficiency, split between `shares`
    processes that run at the same time (each gets cores // shares threads)."""
    return peak_tflops * efficiency / max(1, shares)


def machine_key() -> str:
    """This machine as the cache knows it: host name, CPU and core count."""
    return f"{platform.node()}|{platform.processor() or platform.machine()}|{os.cpu_count()}"


def entry_key(machine: str, precision: str, shape: MatmulShape | str, threads: int | None = None) -> str:
    """A cache entry's key: 'vm|x86_64|2 bf16 2048x384x1536', and ' 1 threads' where the figure is for
    fewer threads than the machine's (one of several stage processes)."""
    label = shape.label if isinstance(shape, MatmulShape) else shape
    return f"{machine} {precision} {label}" + (f" {threads} threads" if threads is not None else "")


def best_of_runs(run_once: Callable[[], float], runs: int = RUNS, budget_s: float = float("inf")) -> float:
    """The highest of `runs` measurements (each a rate: load can only lower it); fewer when they
    take longer than `budget_s` in all (two at least)."""
    started, best = time.perf_counter(), 0.0
    for run in range(runs):
        best = max(best, run_once())
        if run >= 1 and time.perf_counter() - started > budget_s:
            break
    return best


def _matmul_tflops(shape: MatmulShape = SQUARE, precision: str = "fp32", threads: int | None = None,
                   seconds: float = RUN_SECONDS) -> float:
    """One short run: TFLOP/s of `shape`'s matmuls in `precision` on `threads` (None: torch's
    default), repeated for about `seconds`.

    Rated by wall time and by the CPU time the process got (times the threads
    torch uses), whichever is faster: on a busy machine the process waits for a
    core, and the wall clock counts that wait as if the CPU were slow.
    """
    import torch  # only the CPU path needs torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        return _timed_sets(shape, torch.bfloat16 if precision == "bf16" else torch.float32, seconds)
    finally:
        torch.set_num_threads(previous)


def _timed_sets(shape: MatmulShape, dtype: Any, seconds: float) -> float:
    import torch

    pairs = [(torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)) for m, k, n in shape.matmuls]
    for a, b in pairs:
        torch.mm(a, b)  # warm-up: thread pool, caches, the kernel for this dtype
    threads = max(1, torch.get_num_threads())
    sets, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while True:
        for a, b in pairs:
            torch.mm(a, b)
        sets += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and sets >= 2:
            cpu = time.process_time() - cpu_started
            flops = shape.flops * sets
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
        """'0.0305 TFLOP/s, measured 2026-11-02 (torch 2.13.0, 2 threads, fp32 512x512x512)', or 'none cached'."""
        return f"{self.old.peak_tflops:.3g} TFLOP/s, {self.old.source}" if self.old is not None else "none cached"

    @property
    def now_text(self) -> str:
        """'0.0412 TFLOP/s, measured 2026-11-30 (torch 2.13.0, 2 threads, fp32 512x512x512) (+35%)'."""
        change = f" ({self.new.peak_tflops / self.old.peak_tflops - 1:+.0%})" if self.old is not None else ""
        return f"{self.new.peak_tflops:.3g} TFLOP/s, {self.new.source}{change}"


def read_entry(path: Path, key: str) -> HostSpeed | None:
    """The cache entry under `key` (entry_key) as it is, fresh or not; None if there is none readable."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))["machines"][key]
        speed = HostSpeed(float(entry["peak_tflops"]), str(entry["measured_on"]), str(entry["torch_version"]),
                          int(entry["threads"]), str(entry.get("machine", key)), cached=True,
                          precision=str(entry.get("precision", "fp32")), shape=str(entry.get("shape", SQUARE.label)))
        datetime.date.fromisoformat(speed.measured_on)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return speed if speed.peak_tflops > 0 else None


def read_cached(path: Path, key: str, torch_version: str, threads: int, today: datetime.date) -> HostSpeed | None:
    """The cached speed under `key` for this torch and thread count, if fresh; None otherwise."""
    speed = read_entry(path, key)
    if speed is None or speed.torch_version != torch_version or speed.threads != threads:
        return None
    age = today - datetime.date.fromisoformat(speed.measured_on)
    return speed if age.days <= MAX_AGE_DAYS else None


def write_cached(path: Path, speed: HostSpeed) -> None:
    """Add this figure's entry (atomically: other processes may read at the same time); best effort."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        machines = data["machines"] if isinstance(data.get("machines"), dict) else {}
    except (OSError, ValueError, AttributeError):
        machines = {}
    entry = asdict(speed)
    del entry["cached"], entry["busy_note"]
    all_threads = _torch_version_and_threads()[1]
    machines[entry_key(speed.machine, speed.precision, speed.shape,
                       speed.threads if speed.threads < all_threads else None)] = entry
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


def measure_now(runs: int, precision: str = "fp32", shape: MatmulShape = SQUARE,
                read_load: Callable[[], HostLoad] | None = None, threads: int | None = None) -> HostSpeed:
    """Measure this machine now (best of `runs`), not cached yet. On a busy machine (`read_load`,
    before and after) it takes BUSY_RUNS_FACTOR times the runs; still busy after them, the figure
    carries a `busy_note` and `host_speed` does not cache it. `threads`: what one process of several
    gets (None: all of the machine's)."""
    version, all_threads = _torch_version_and_threads()
    read_load = read_load or read_host_load
    before = read_load()

    def run_once() -> float:
        return _matmul_tflops(shape, precision, threads)

    best = best_of_runs(run_once, runs, BUDGET_SECONDS)
    after = read_load()
    if before.busy or after.busy:
        best = max(best, best_of_runs(run_once, runs * (BUSY_RUNS_FACTOR - 1), BUDGET_SECONDS))
        after = read_load()
    return HostSpeed(best, datetime.date.today().isoformat(), version, threads or all_threads, machine_key(),
                     cached=False,
                     precision=precision, shape=shape.label, busy_note=after.text if after.busy else "")


@functools.lru_cache(maxsize=16)
def host_speed(precision: str = "fp32", shape: MatmulShape = SQUARE, threads: int | None = None) -> HostSpeed:
    """This machine's speed in `precision` on `shape`: from the cache when fresh, else measured
    (best of RUNS) and cached unless the machine was busy. `threads`: the speed of one process
    with that many threads (a stage process of several), None: of the whole machine."""
    version, all_threads = _torch_version_and_threads()
    threads = None if threads is None or threads >= all_threads else threads
    path = cache_root() / CACHE_FILE
    key = entry_key(machine_key(), precision, shape, threads)
    cached = read_cached(path, key, version, threads or all_threads, datetime.date.today())
    if cached is not None:
        return cached
    speed = measure_now(RUNS, precision, shape, threads=threads)
    if not speed.busy_note:
        write_cached(path, speed)
    return speed


def remeasure_host_speed(runs: int = REMEASURE_RUNS, precision: str = "fp32", shape: MatmulShape = SQUARE) -> Remeasured:
    """Measure the host again now and overwrite this figure's cache entry, whatever its age (a
    busy machine's figure too: it was asked for by hand, and its source says it was busy).

    This process plans with the new figure from then on (`host_speed` reads it again).

    Args:
        runs: short matmul runs; the best is kept (load only ever slows a run down).
        precision: "fp32" or "bf16".
        shape: the matmuls timed.

    Returns:
        The entry replaced (None if there was none) and the new one.
    """
    path = cache_root() / CACHE_FILE
    old = read_entry(path, entry_key(machine_key(), precision, shape))
    new = measure_now(runs, precision, shape)
    write_cached(path, new)
    host_speed.cache_clear()
    return Remeasured(old, new, path)


def measure_cpu_tflops(precision: str = "fp32", shape: MatmulShape = SQUARE) -> float:
    """Achieved TFLOP/s of the host in `precision` on `shape` (see host_speed); what the planner uses for `cpu`."""
    return host_speed(precision, shape).peak_tflops

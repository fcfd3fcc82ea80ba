"""The host CPU's training speed, per precision and block shape: measured once per machine, then cached.

One short matmul timed under whatever else runs gave 99.5 ms in one run and
852 ms in the next for the same stage. So the speed is the best of several
short runs (load only ever slows a run down, so the fastest is the closest to
what the CPU can do), each rated by the CPU time it got (core.devices.host_probe),
and it is kept per machine in the user cache dir
($ALLOT_CACHE_DIR, else $XDG_CACHE_HOME/allot, else ~/.cache/allot) with the
date and the torch version; a new torch, another thread count or a file older
than MAX_AGE_DAYS measures again.

A CPU's speed depends on the precision, the shapes and the work (docs/design.md,
"Host speed"): bf16 matmuls run at a few times fp32's speed where the CPU has bf16
instructions and 50-100x slower where it emulates them, a 2048 x 384 x 1536
matmul runs at another rate than a 512 x 512 square, and a block's norms,
attention and backward run slower than its bare matmuls. So each figure is
the forward and backward of one transformer block of the model (`BlockShape.of_block`)
in one precision, as training runs it, cached under its own key.

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
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from core.devices.host_load import HostLoad, read_host_load
from core.system.disk_cache import cache_root
from core.system.durable import atomic_write_text

CACHE_FILE = "host-speed.json"
MAX_AGE_DAYS = 30
RUNS = 7  # short runs; the best is kept
RUN_SECONDS = 0.03  # each run repeats the block's forward and backward for at least this long
BUDGET_SECONDS = 3.0  # a measurement stops after this long (at least 2 runs): slow bf16 on big shapes
REMEASURE_RUNS = 21  # asked for by hand, likely because the first figure looked wrong: take more
BUSY_RUNS_FACTOR = 3  # on a busy machine: this many times the runs, for a chance at a quiet moment
MAX_ROWS, MAX_D_MODEL, MAX_FFN = 2048, 1024, 4096  # wider matmuls run at the same rate on a CPU
MIN_ROWS = 64
MAX_SET_FLOPS = 3e9  # one forward and backward of the block's matmuls: fewer rows where the widths are large


@dataclass(frozen=True)
class BlockShape:
    """One transformer block's input, `batch` x `seq` tokens of width d_model, and its MLP width:
    its matmuls are d_model x 3 d_model (q, k, v), d_model x d_model (out), d_model x ffn and ffn x
    d_model (MLP), beside causal attention over `seq` (core.devices.host_probe)."""

    batch: int
    seq: int
    d_model: int
    ffn: int

    @property
    def label(self) -> str:
        """'block 1x256x384x1536': batch x seq x d_model x ffn, the cache key's shape part."""
        return f"block {self.batch}x{self.seq}x{self.d_model}x{self.ffn}"

    @property
    def rows(self) -> int:
        return self.batch * self.seq

    @property
    def forward_flops(self) -> float:
        """The block's forward FLOPs as the planner's flop counter counts them (core.model.measure):
        the four matmuls (biases not counted) and attention as the flash kernel, causal or not,
        2 x 2 b s^2 d for q k^T and p v."""
        d, f = self.d_model, self.ffn
        return 2.0 * self.rows * (3 * d * d + d * d + 2 * d * f) + 4.0 * self.batch * self.seq ** 2 * d

    @property
    def matmul_flops(self) -> float:
        """The forward and backward FLOPs of the block's four matmuls (3 x the forward's)."""
        d, f = self.d_model, self.ffn
        return 3.0 * 2 * self.rows * (3 * d * d + d * d + 2 * d * f)

    @classmethod
    def of_block(cls, tokens: int, seq_len: int, d_model: int, ffn: int) -> BlockShape:
        """A model's block at `tokens` per micro-batch of `seq_len`-token sequences, widths capped at
        MAX_D_MODEL/MAX_FFN, rows at MAX_ROWS and at what keeps a set's matmuls under MAX_SET_FLOPS
        (MIN_ROWS at least), in whole sequences where a sequence fits (else one shorter one)."""
        d, f = max(1, min(d_model, MAX_D_MODEL)), max(1, min(ffn, MAX_FFN))
        per_row = cls(1, 1, d, f).matmul_flops
        rows = max(1, min(tokens, MAX_ROWS, max(MIN_ROWS, int(MAX_SET_FLOPS // per_row))))
        seq = max(1, min(seq_len, rows))
        return cls(max(1, rows // seq), seq, d, f)


NO_MODEL = BlockShape(1, 128, 512, 2048)  # where no model is known (a device list before a model)


@dataclass(frozen=True)
class HostSpeed:
    """The host's achieved TFLOP/s on a block in one precision and shape, and where the figure comes from."""

    peak_tflops: float
    measured_on: str  # ISO date
    torch_version: str
    threads: int
    machine: str
    cached: bool  # read from the cache file (False: measured by this process)
    precision: str = "fp32"
    shape: str = NO_MODEL.label
    busy_note: str = ""  # measured on a busy machine, so not cached: "load 7.9 on 2 cores"

    @property
    def source(self) -> str:
        """'measured 2026-11-30 (torch 2.13.0, 2 threads, bf16 block 1x256x384x1536)': for tooltips and reports;
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


def entry_key(machine: str, precision: str, shape: BlockShape | str, threads: int | None = None) -> str:
    """A cache entry's key: 'vm|x86_64|2 bf16 block 1x256x384x1536', and ' 1 threads' where the figure
    is for fewer threads than the machine's (one of several stage processes)."""
    label = shape.label if isinstance(shape, BlockShape) else shape
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


def _block_tflops(shape: BlockShape = NO_MODEL, precision: str = "fp32", threads: int | None = None,
                  seconds: float = RUN_SECONDS) -> float:
    """One short run: TFLOP/s of `shape`'s block, forward and backward, in `precision` on `threads`
    (None: torch's default), repeated for about `seconds` (core.devices.host_probe)."""
    import torch  # only the CPU path needs torch

    from core.devices.host_probe import block_tflops

    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        return block_tflops(shape, precision, seconds)
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class Remeasured:
    """A measurement asked for by hand: the entry it replaced (None: there was none) and the new one."""

    old: HostSpeed | None
    new: HostSpeed
    path: Path  # the cache file written

    @property
    def before_text(self) -> str:
        """'0.0305 TFLOP/s, measured 2026-11-02 (torch 2.13.0, 2 threads, fp32 block 1x128x512x2048)', or
        'none cached'."""
        return f"{self.old.peak_tflops:.3g} TFLOP/s, {self.old.source}" if self.old is not None else "none cached"

    @property
    def now_text(self) -> str:
        """'0.0412 TFLOP/s, measured 2026-11-30 (torch 2.13.0, 2 threads, fp32 block 1x128x512x2048) (+35%)'."""
        change = f" ({self.new.peak_tflops / self.old.peak_tflops - 1:+.0%})" if self.old is not None else ""
        return f"{self.new.peak_tflops:.3g} TFLOP/s, {self.new.source}{change}"


def read_entry(path: Path, key: str) -> HostSpeed | None:
    """The cache entry under `key` (entry_key) as it is, fresh or not; None if there is none readable."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))["machines"][key]
        speed = HostSpeed(float(entry["peak_tflops"]), str(entry["measured_on"]), str(entry["torch_version"]),
                          int(entry["threads"]), str(entry.get("machine", key)), cached=True,
                          precision=str(entry.get("precision", "fp32")), shape=str(entry.get("shape", NO_MODEL.label)))
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


def measure_now(runs: int, precision: str = "fp32", shape: BlockShape = NO_MODEL,
                read_load: Callable[[], HostLoad] | None = None, threads: int | None = None) -> HostSpeed:
    """Measure this machine now (best of `runs`), not cached yet. On a busy machine (`read_load`,
    before and after) it takes BUSY_RUNS_FACTOR times the runs; still busy after them, the figure
    carries a `busy_note` and `host_speed` does not cache it. `threads`: what one process of several
    gets (None: all of the machine's)."""
    version, all_threads = _torch_version_and_threads()
    read_load = read_load or read_host_load
    before = read_load()

    def run_once() -> float:
        return _block_tflops(shape, precision, threads)

    try:
        best = best_of_runs(run_once, runs, BUDGET_SECONDS)
        after = read_load()
        if before.busy or after.busy:
            best = max(best, best_of_runs(run_once, runs * (BUSY_RUNS_FACTOR - 1), BUDGET_SECONDS))
            after = read_load()
    finally:
        _release_probe()
    return HostSpeed(best, datetime.date.today().isoformat(), version, threads or all_threads, machine_key(),
                     cached=False,
                     precision=precision, shape=shape.label, busy_note=after.text if after.busy else "")


def _release_probe() -> None:
    """The probe's block and tensors are garbage once measured (the process goes on to train)."""
    probe = sys.modules.get("core.devices.host_probe")
    if probe is not None:
        probe.release()


@functools.lru_cache(maxsize=16)
def host_speed(precision: str = "fp32", shape: BlockShape = NO_MODEL, threads: int | None = None) -> HostSpeed:
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


def remeasure_host_speed(runs: int = REMEASURE_RUNS, precision: str = "fp32",
                         shape: BlockShape = NO_MODEL) -> Remeasured:
    """Measure the host again now and overwrite this figure's cache entry, whatever its age (a
    busy machine's figure too: it was asked for by hand, and its source says it was busy).

    This process plans with the new figure from then on (`host_speed` reads it again).

    Args:
        runs: short runs of the block; the best is kept (load only ever slows a run down).
        precision: "fp32" or "bf16".
        shape: the block timed.

    Returns:
        The entry replaced (None if there was none) and the new one.
    """
    path = cache_root() / CACHE_FILE
    old = read_entry(path, entry_key(machine_key(), precision, shape))
    new = measure_now(runs, precision, shape)
    write_cached(path, new)
    host_speed.cache_clear()
    return Remeasured(old, new, path)


def measure_cpu_tflops(precision: str = "fp32", shape: BlockShape = NO_MODEL) -> float:
    """Achieved TFLOP/s of the host in `precision` on `shape` (see host_speed); what the planner uses for `cpu`."""
    return host_speed(precision, shape).peak_tflops

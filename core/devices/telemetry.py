"""Live telemetry: a sampler thread that reads NVML and psutil at a fixed rate.

Each tick makes a timestamped `Snapshot` (per GPU: utilization, memory,
temperature, power, SM clock, PCIe rx/tx, processes with their GPU memory;
the host: CPU %, RAM, and CPU %/RSS of the watched training processes) and
appends its numbers to bounded ring buffers (core.devices.ring_buffer) that views
read as array views. No Qt here: listeners are plain callables, called on the
sampler thread; a GUI reads `latest` and the buffers from its own timer.

NVML goes through core.devices.nvml_gateway, so nothing here raises for hardware
trouble: a missing value is None in the snapshot and NaN in the history.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from core.devices import nvml_gateway as nv
from core.devices.ring_buffer import RingBuffer
from core.errors import InputError

log = logging.getLogger(__name__)

MIN_INTERVAL_S, MAX_INTERVAL_S, DEFAULT_INTERVAL_S = 0.2, 10.0, 1.0
DEFAULT_HISTORY_S = 3600.0
DEFAULT_PCIE_INTERVAL_S = 5.0  # each PCIe read blocks NVML for 20 ms, so read it less often
GPU_COLUMNS = ("utilization_percent", "memory_used_bytes", "temperature_c", "power_watts",
               "sm_clock_mhz", "pcie_rx_bytes_per_s", "pcie_tx_bytes_per_s")
HOST_COLUMNS = ("cpu_percent", "ram_used_bytes")
PROCESS_COLUMNS = ("cpu_percent", "rss_bytes")


@dataclass(frozen=True)
class GpuProcess:
    """A process holding memory on a GPU."""

    pid: int
    name: str
    used_memory_bytes: int | None


@dataclass(frozen=True)
class GpuSample:
    """One GPU at one tick; None where NVML could not say (see Snapshot.reasons)."""

    nvml_index: int
    name: str
    utilization_percent: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    temperature_c: float | None
    power_watts: float | None
    power_limit_watts: float | None
    sm_clock_mhz: float | None
    pcie_rx_bytes_per_s: float | None  # the latest PCIe reading (taken every few seconds)
    pcie_tx_bytes_per_s: float | None
    processes: tuple[GpuProcess, ...]
    lost: bool


@dataclass(frozen=True)
class ProcessSample:
    """A watched (training) process on the host."""

    pid: int
    name: str
    cpu_percent: float | None  # of one core: 250 means two and a half cores busy
    rss_bytes: int | None
    alive: bool


@dataclass(frozen=True)
class HostSample:
    """The host at one tick."""

    cpu_percent: float | None  # of all cores; None only where psutil cannot say
    ram_used_bytes: int
    ram_total_bytes: int
    processes: tuple[ProcessSample, ...]


@dataclass(frozen=True)
class Snapshot:
    """Everything one tick read."""

    time_s: float  # wall clock, time.time()
    gpus: tuple[GpuSample, ...]
    host: HostSample
    reasons: tuple[str, ...]  # why values are missing, each once


def check_interval(seconds: float) -> float:
    """The sampling interval, validated.

    Raises:
        InputError: outside MIN_INTERVAL_S..MAX_INTERVAL_S.
    """
    value = float(seconds)
    if not MIN_INTERVAL_S <= value <= MAX_INTERVAL_S:  # also rejects NaN
        raise InputError(f"interval {seconds} s is outside {MIN_INTERVAL_S}..{MAX_INTERVAL_S} s")
    return value


class TelemetrySampler:
    """Samples GPUs and the host every `interval_s` on a daemon thread.

    History: `gpu_history(i)`, `host_history` and `process_history(pid)` are
    RingBuffers of history_s / interval_s rows (an hour at 1 s by default).
    """

    def __init__(self, gateway: nv.NvmlGateway | None = None, *,
                 interval_s: float = DEFAULT_INTERVAL_S, history_s: float = DEFAULT_HISTORY_S,
                 pcie_interval_s: float = DEFAULT_PCIE_INTERVAL_S,
                 gpus: Sequence[Any] | None = None,
                 on_sample: Callable[[Snapshot], None] | None = None) -> None:
        """Args:
            gateway: the NVML gateway (default: the process-wide real one).
            gpus: GpuDevices to sample (default: every GPU NVML sees);
                simulated ones are skipped, they are never sampled.
            on_sample: called with each Snapshot on the sampler thread.
        """
        self._gateway = gateway or nv.shared_gateway()
        self._interval_s = check_interval(interval_s)
        self._capacity = max(1, math.ceil(history_s / self._interval_s))
        self._pcie_interval_s = pcie_interval_s
        self._chosen = None if gpus is None else tuple(
            g.nvml_index for g in gpus if not g.simulated and g.nvml_index is not None)
        self._indices: tuple[int, ...] | None = None
        self._indices_lock = threading.Lock()
        self._listeners = [on_sample] if on_sample else []
        self._gpu_buffers: dict[int, RingBuffer] = {}
        self.host_history = RingBuffer(self._capacity, HOST_COLUMNS)
        self._process_buffers: dict[int, RingBuffer] = {}
        self._watched: dict[int, psutil.Process | None] = {}
        self._names: dict[int, str] = {}
        self._pcie: dict[int, tuple[float | None, float | None]] = {}
        self._ticks = 0
        self._failed_listeners: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.latest: Snapshot | None = None
        psutil.cpu_percent(None)  # the first call only starts psutil's CPU counter
        self._cpu_read_at = time.monotonic()
        self._cpu_percent: float | None = None  # the last figure, kept for ticks too close together

    # -- control -------------------------------------------------------------

    @property
    def interval_s(self) -> float:
        return self._interval_s

    def set_interval(self, seconds: float) -> None:
        """Change the interval from the next tick (history keeps its row count).

        Raises:
            InputError: outside 0.2..10 s.
        """
        self._interval_s = check_interval(seconds)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start sampling on a daemon thread (the first tick is immediate)."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="telemetry-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and wait for it (a tick in progress finishes)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._thread = None

    def add_listener(self, callback: Callable[[Snapshot], None]) -> None:
        """Call `callback(snapshot)` after every tick, on the sampler thread."""
        self._listeners = [*self._listeners, callback]

    def set_watched_pids(self, pids: Iterable[int]) -> None:
        """Watch these host processes (the training run); history for others is dropped."""
        watched: dict[int, psutil.Process | None] = {}
        for pid in dict.fromkeys(int(p) for p in pids):
            watched[pid] = self._watched.get(pid) or _process(pid)
            if pid not in self._process_buffers:
                self._process_buffers[pid] = RingBuffer(self._capacity, PROCESS_COLUMNS)
        self._process_buffers = {pid: self._process_buffers[pid] for pid in watched}
        self._watched = watched  # swapped whole: the sampler thread iterates its own copy

    # -- history ---------------------------------------------------------------

    @property
    def gpu_indices(self) -> tuple[int, ...]:
        """NVML indices that are sampled (empty when NVML is unavailable)."""
        with self._indices_lock:  # the sampler thread and a view may ask first at the same time
            if self._indices is None:
                count = self._gateway.device_count()
                chosen = range(count) if self._chosen is None else self._chosen
                indices = tuple(i for i in chosen if i < count)
                self._gpu_buffers = {i: RingBuffer(self._capacity, GPU_COLUMNS) for i in indices}
                self._indices = indices  # published last: whoever sees it finds its buffers
            return self._indices

    def gpu_history(self, nvml_index: int) -> RingBuffer:
        """History of one GPU, columns GPU_COLUMNS.

        Raises:
            KeyError: that GPU is not sampled.
        """
        self.gpu_indices  # noqa: B018 - creates the buffers
        return self._gpu_buffers[nvml_index]

    def process_history(self, pid: int) -> RingBuffer | None:
        """History of a watched process, columns PROCESS_COLUMNS."""
        return self._process_buffers.get(pid)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why values are missing, each once."""
        return self._gateway.reasons

    # -- sampling --------------------------------------------------------------

    def sample_once(self) -> Snapshot:
        """Read everything now, append to the history, notify listeners."""
        now = time.time()
        every = max(1, round(self._pcie_interval_s / self._interval_s))
        read_pcie = self._ticks % every == 0
        self._ticks += 1
        gpus = tuple(self._sample_gpu(i, read_pcie) for i in self.gpu_indices)
        self._names = {p.pid: p.name for g in gpus for p in g.processes}  # forget gone pids
        host = self._sample_host()
        snapshot = Snapshot(now, gpus, host, self._gateway.reasons)
        for gpu in gpus:
            self._gpu_buffers[gpu.nvml_index].append(now, (
                gpu.utilization_percent, gpu.memory_used_bytes, gpu.temperature_c,
                gpu.power_watts, gpu.sm_clock_mhz, gpu.pcie_rx_bytes_per_s, gpu.pcie_tx_bytes_per_s))
        self.host_history.append(now, (host.cpu_percent, host.ram_used_bytes))
        buffers = self._process_buffers
        for process in host.processes:
            if process.pid in buffers:
                buffers[process.pid].append(now, (process.cpu_percent, process.rss_bytes))
        self.latest = snapshot
        self._notify(snapshot)
        return snapshot

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:  # a bug here must not kill the monitor silently and forever
                log.exception("telemetry tick failed")
            due += self._interval_s
            now = time.monotonic()
            if due < now:  # overran (slow PCIe read, suspended laptop): skip missed ticks
                due = now
            self._stop.wait(due - now)

    def _sample_gpu(self, index: int, read_pcie: bool) -> GpuSample:
        gw = self._gateway
        util = gw.device(index, "nvmlDeviceGetUtilizationRates")
        memory = gw.device(index, "nvmlDeviceGetMemoryInfo")
        power_mw = gw.device(index, "nvmlDeviceGetPowerUsage")
        limit_mw = gw.static(index, "nvmlDeviceGetEnforcedPowerLimit")
        if read_pcie:
            rx = gw.device(index, "nvmlDeviceGetPcieThroughput", nv.PCIE_UTIL_RX_BYTES)
            tx = gw.device(index, "nvmlDeviceGetPcieThroughput", nv.PCIE_UTIL_TX_BYTES)
            self._pcie[index] = (_kib(rx), _kib(tx))  # NVML reports KB/s
        rx_bytes, tx_bytes = self._pcie.get(index, (None, None))
        return GpuSample(
            nvml_index=index,
            name=gw.static(index, "nvmlDeviceGetName") or f"GPU {index}",
            utilization_percent=float(util.gpu) if util is not None else None,
            memory_used_bytes=int(memory.used) if memory is not None else None,
            memory_total_bytes=int(memory.total) if memory is not None else None,
            temperature_c=_float(gw.device(index, "nvmlDeviceGetTemperature", nv.TEMPERATURE_GPU)),
            power_watts=power_mw / 1000 if power_mw is not None else None,
            power_limit_watts=limit_mw / 1000 if limit_mw is not None else None,
            sm_clock_mhz=_float(gw.device(index, "nvmlDeviceGetClockInfo", nv.CLOCK_SM)),
            pcie_rx_bytes_per_s=rx_bytes,
            pcie_tx_bytes_per_s=tx_bytes,
            processes=self._gpu_processes(index),
            lost=gw.is_lost(index),
        )

    def _gpu_processes(self, index: int) -> tuple[GpuProcess, ...]:
        found = self._gateway.device(index, "nvmlDeviceGetComputeRunningProcesses") or ()
        processes = []
        for item in found:
            pid = int(item.pid)
            name = self._names.get(pid)
            if name is None:
                name = _process_name(pid)
                self._names[pid] = name
            used = getattr(item, "usedGpuMemory", None)  # None under WDDM and in some containers
            processes.append(GpuProcess(pid, name, int(used) if used is not None else None))
        return tuple(processes)

    def _sample_host(self) -> HostSample:
        memory = psutil.virtual_memory()
        processes = []
        for pid, process in self._watched.items():
            processes.append(_watched_sample(pid, process))
        now = time.monotonic()
        if now - self._cpu_read_at >= 0.05:
            cpu = float(psutil.cpu_percent(None))
            self._cpu_read_at = now
        elif self._cpu_percent is not None:
            cpu = self._cpu_percent  # too soon after the last read (psutil would say 0.0): it still holds
        else:
            # the first tick comes right after the start: measure over a tenth of a second instead of
            # showing "?" for a whole interval
            cpu = float(psutil.cpu_percent(0.1))
            self._cpu_read_at = time.monotonic()
        self._cpu_percent = cpu
        return HostSample(
            cpu_percent=cpu,
            ram_used_bytes=int(memory.total - memory.available),  # what programs hold, not cache
            ram_total_bytes=int(memory.total),
            processes=tuple(processes),
        )

    def _notify(self, snapshot: Snapshot) -> None:
        for callback in self._listeners:
            try:
                callback(snapshot)
            except Exception:  # one bad listener must not stop sampling; log it once
                if id(callback) not in self._failed_listeners:
                    self._failed_listeners.add(id(callback))
                    log.exception("telemetry listener %r failed", callback)


def _process(pid: int) -> psutil.Process | None:
    try:
        process = psutil.Process(pid)
        process.cpu_percent(None)  # starts its CPU counter
        return process
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _watched_sample(pid: int, process: psutil.Process | None) -> ProcessSample:
    if process is None:
        return ProcessSample(pid, "?", None, None, alive=False)
    try:
        with process.oneshot():
            return ProcessSample(pid, process.name(), float(process.cpu_percent(None)),
                                 int(process.memory_info().rss), alive=True)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ProcessSample(pid, "?", None, None, alive=False)
    except psutil.AccessDenied:
        return ProcessSample(pid, "?", None, None, alive=True)


def _process_name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"  # another user's, another container's, or already gone


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


def _kib(value: Any) -> float | None:
    return float(value) * 1024 if value is not None else None

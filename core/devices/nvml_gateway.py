"""The one gateway to NVML: the only module in Allot that imports pynvml.

Every NVML call goes through `NvmlGateway`. It initialises NVML lazily and
once, turns every NVML error into a value (None) plus one human-readable
reason (logged once, kept in `reasons`), remembers what will never work
(a lost GPU, a function this driver lacks, a value this board does not
report) so that it is not asked again, and caches device handles and
static facts so that a telemetry tick reads only the values that change.

The backend is injectable: the real `pynvml` module by default, or
`core.devices.fake_nvml.FakeNvml` in tests and demos, which raises the same
`pynvml.NVMLError` subclasses (built by `nvml_error`).
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

# NVML return codes and enums (nvml.h; stable across driver versions).
NOT_SUPPORTED, NO_PERMISSION, UNINITIALIZED, INVALID_ARGUMENT = 3, 4, 1, 2
DRIVER_NOT_LOADED, LIBRARY_NOT_FOUND, FUNCTION_NOT_FOUND, GPU_IS_LOST = 9, 12, 13, 15
RESET_REQUIRED, LIB_RM_VERSION_MISMATCH, GPU_NOT_FOUND, UNKNOWN = 16, 18, 28, 999
TIMEOUT, NO_DATA, NOT_READY = 10, 21, 27
TEMPERATURE_GPU, CLOCK_SM = 0, 1
PCIE_UTIL_TX_BYTES, PCIE_UTIL_RX_BYTES = 0, 1
TOPOLOGY_INTERNAL, TOPOLOGY_SINGLE, TOPOLOGY_MULTIPLE = 0, 10, 20
TOPOLOGY_HOSTBRIDGE, TOPOLOGY_NODE, TOPOLOGY_SYSTEM = 30, 40, 50
NVLINK_MAX_LINKS = 36  # NVML's bound; a probe stops at the first link the GPU lacks

_SENTENCES = {
    LIBRARY_NOT_FOUND: "library not found (is the NVIDIA driver installed?)",
    DRIVER_NOT_LOADED: "the NVIDIA driver is not loaded",
    NO_PERMISSION: "no permission (is this user allowed to use the GPU devices?)",
    GPU_IS_LOST: "the GPU is lost (fell off the bus); it needs a reset or a reboot",
    GPU_NOT_FOUND: "the GPU is gone (removed or reset)",
    RESET_REQUIRED: "the GPU needs a reset",
    NOT_SUPPORTED: "not supported on this GPU",
    FUNCTION_NOT_FOUND: "not available in this driver's NVML",
    UNINITIALIZED: "NVML is not initialised (the driver went away?)",
    LIB_RM_VERSION_MISMATCH: "driver and NVML library versions differ (reboot after a driver update)",
    TIMEOUT: "timed out", NO_DATA: "no data yet", NOT_READY: "not ready yet", UNKNOWN: "unknown error",
}
_NVML_DOWN = {LIBRARY_NOT_FOUND, DRIVER_NOT_LOADED, UNINITIALIZED, LIB_RM_VERSION_MISMATCH}
_GPU_DOWN = {GPU_IS_LOST, GPU_NOT_FOUND, RESET_REQUIRED}
_NEVER_WORKS = {NOT_SUPPORTED, NO_PERMISSION, INVALID_ARGUMENT}

# What each function reads, for the reasons people see.
_LABELS = {
    "nvmlDeviceGetHandleByIndex": "access", "nvmlDeviceGetCount": "GPU count",
    "nvmlSystemGetDriverVersion": "driver version", "nvmlSystemGetCudaDriverVersion": "CUDA version",
    "nvmlDeviceGetPciInfo": "PCI bus id", "nvmlDeviceGetNvLinkVersion": "NVLink version",
    "nvmlDeviceGetName": "name", "nvmlDeviceGetUUID": "UUID", "nvmlDeviceGetMemoryInfo": "memory",
    "nvmlDeviceGetUtilizationRates": "utilization", "nvmlDeviceGetTemperature": "temperature",
    "nvmlDeviceGetPowerUsage": "power", "nvmlDeviceGetEnforcedPowerLimit": "power limit",
    "nvmlDeviceGetClockInfo": "SM clock", "nvmlDeviceGetMaxClockInfo": "max SM clock",
    "nvmlDeviceGetCudaComputeCapability": "compute capability",
    "nvmlDeviceGetPcieThroughput": "PCIe throughput",
    "nvmlDeviceGetComputeRunningProcesses": "GPU processes",
    "nvmlDeviceGetMaxPcieLinkGeneration": "PCIe generation",
    "nvmlDeviceGetMaxPcieLinkWidth": "PCIe width",
}

try:  # the error classes exist even where the NVML library does not
    import pynvml as _pynvml

    NVMLError: type[Exception] = _pynvml.NVMLError
    NVMLLibraryMismatchError: type[Exception] = _pynvml.NVMLLibraryMismatchError
except ImportError:  # nvidia-ml-py missing: a stand-in so the fake still works
    _pynvml = None

    class _StandInNVMLError(Exception):
        def __init__(self, value: int) -> None:
            super().__init__(value)
            self.value = value

    NVMLError = _StandInNVMLError
    NVMLLibraryMismatchError = type("NVMLLibraryMismatchError", (Exception,), {})


def nvml_error(code: int) -> Exception:
    """The exception pynvml raises for an NVML return code (its own subclass)."""
    return NVMLError(code)


def describe(code: int | None) -> str:
    """A human sentence for an NVML return code."""
    if code is None:
        return "failed"
    return _SENTENCES.get(code, f"NVML error {code}")


def _error_code(error: Exception) -> int | None:
    if isinstance(error, NVMLLibraryMismatchError):
        return FUNCTION_NOT_FOUND  # pynvml's unversioned wrappers raise this instead
    if isinstance(error, NVMLError):
        return int(getattr(error, "value", UNKNOWN))
    return None


def text(value: Any) -> Any:
    """NVML strings as str (older pynvml and ctypes fields give bytes)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class NvmlGateway:
    """Fail-soft access to NVML for one backend (the pynvml module or a fake).

    Every query returns its value or None; why a value is None is in
    `reasons` (each sentence once) and in the log (once). Thread-safe for one
    writer thread plus readers: the caches are plain dicts.
    """

    def __init__(self, backend: Any | None = None) -> None:
        self._backend: Any = backend
        self._lock = threading.RLock()
        self._reset()

    def _reset(self) -> None:
        self._started = False  # nvmlInit succeeded: only then nvmlShutdown
        self._tried = False
        self._down: str | None = None  # why NVML as a whole is unusable
        self._lost: set[int] = set()
        self._missing: set[str] = set()  # functions this NVML does not have
        self._never: set[tuple[Any, ...]] = set()  # (index, function, args) that cannot work
        self._handles: dict[int, Any] = {}
        self._static: dict[tuple[Any, ...], Any] = {}
        self._reasons: dict[str, None] = {}  # insertion-ordered set
        self._gpu_reasons: dict[int, dict[str, None]] = {}

    # -- state ---------------------------------------------------------------

    @property
    def is_fake(self) -> bool:
        """True when the backend is a fake (no real GPU behind it)."""
        return bool(getattr(self._backend, "FAKE", False))

    @property
    def reason(self) -> str | None:
        """Why NVML cannot be used at all, or None while it works."""
        self._ensure_started()
        return self._down

    @property
    def reasons(self) -> tuple[str, ...]:
        """Every distinct reason so far, oldest first."""
        with self._lock:
            return tuple(self._reasons)

    def gpu_reasons(self, index: int) -> tuple[str, ...]:
        """The reasons that concern one GPU (its missing values, its loss)."""
        with self._lock:
            return tuple(self._gpu_reasons.get(index, ()))

    def available(self) -> bool:
        """Initialise NVML if not yet tried; True while it is usable."""
        self._ensure_started()
        return self._down is None

    def is_lost(self, index: int) -> bool:
        """True once a GPU reported itself lost or gone."""
        return index in self._lost

    def shutdown(self) -> None:
        """nvmlShutdown, only if nvmlInit succeeded; the next query starts afresh.

        Stop samplers using this gateway first: handles die with the shutdown.
        """
        with self._lock:
            if self._started:
                try:
                    self._backend.nvmlShutdown()
                except Exception as error:  # shutting down a vanished driver fails; nothing to do
                    log.debug("nvmlShutdown failed: %s", error)
            self._reset()

    # -- queries -------------------------------------------------------------

    def device_count(self) -> int:
        """Number of GPUs NVML sees (0 when NVML is unusable)."""
        return int(self.static(None, "nvmlDeviceGetCount") or 0)

    def system(self, function: str, *args: Any) -> Any | None:
        """A system-wide query (driver version and such), not cached."""
        return self._call(None, function, args, lambda fn: fn(*args), quiet=False)

    def handle(self, index: int) -> Any | None:
        """The device handle of an NVML index, fetched once."""
        handle = self._handles.get(index)
        if handle is None and index not in self._lost:
            handle = self._call(index, "nvmlDeviceGetHandleByIndex", (),
                                lambda fn: fn(index), quiet=False)
            if handle is not None:
                self._handles[index] = handle
        return handle

    def device(self, index: int, function: str, *args: Any, quiet: bool = False) -> Any | None:
        """`function(handle, *args)` for one GPU, or None (reason recorded unless quiet).

        quiet: probing (NVLink links, topology) where a failure only means
        "absent"; losing the GPU or the driver is still recorded.
        """
        handle = self.handle(index)
        if handle is None:
            return None
        return self._call(index, function, args, lambda fn: fn(handle, *args), quiet)

    def static(self, index: int | None, function: str, *args: Any) -> Any | None:
        """Like `device` (or `system` when index is None) but read once and cached."""
        key = (index, function, args)
        if key in self._static:
            return self._static[key]
        value = self.system(function, *args) if index is None else self.device(index, function, *args)
        if value is not None or not self._retry_later(index, function, args):
            self._static[key] = value
        return value

    def pair(self, first: int, second: int, function: str) -> Any | None:
        """`function(handle_a, handle_b)` (topology), quiet on failure."""
        a, b = self.handle(first), self.handle(second)
        if a is None or b is None:
            return None
        return self._call(first, function, (second,), lambda fn: fn(a, b), quiet=True)

    # -- internals -----------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._tried:
            return
        with self._lock:
            if self._tried:
                return
            self._tried = True
            if self._backend is None:
                if _pynvml is None:
                    self._go_down("NVML: the nvidia-ml-py package is not installed "
                                  "(pip install nvidia-ml-py)", level=logging.INFO)
                    return
                self._backend = _pynvml
            try:
                self._backend.nvmlInit()
            except Exception as error:  # no driver is a normal state, hence INFO
                self._go_down(f"NVML: {describe(_error_code(error))}", error, logging.INFO)
                return
            self._started = True

    def _retry_later(self, index: int | None, function: str, args: tuple[Any, ...]) -> bool:
        """False when a None from this query is final (so it may be cached)."""
        if self._down is not None or (index is not None and index in self._lost):
            return False
        return function not in self._missing and (index, function, args) not in self._never \
            and (index, function) not in self._never

    def _call(self, index: int | None, function: str, args: tuple[Any, ...],
              invoke: Any, quiet: bool) -> Any | None:
        if not self.available() or (index is not None and index in self._lost):
            return None
        if function in self._missing or (index, function) in self._never \
                or (index, function, args) in self._never:
            return None
        fn = getattr(self._backend, function, None)
        if fn is None:  # an older pynvml without this wrapper
            self._failed(index, function, args, FUNCTION_NOT_FOUND, None, quiet)
            return None
        try:
            return text(invoke(fn))
        except Exception as error:
            self._failed(index, function, args, _error_code(error), error, quiet)
            return None

    def _failed(self, index: int | None, function: str, args: tuple[Any, ...],
                code: int | None, error: Exception | None, quiet: bool) -> None:
        label = _label(function)
        if code in _NVML_DOWN:
            self._go_down(f"NVML: {describe(code)} (stopped reading GPUs)", error)
        elif code in _GPU_DOWN and index is not None:
            self._lost.add(index)
            self._note(index, f"GPU {index}: {describe(code)}", logging.WARNING)
        elif code == FUNCTION_NOT_FOUND:
            self._missing.add(function)
            if not quiet:
                self._note(None, f"NVML: {label}: {describe(code)}")
        elif code in _NEVER_WORKS:
            # Link and topology probes ask per argument; the rest per function.
            self._never.add((index, function, args) if quiet else (index, function))
            if not quiet:
                self._note(index, _scoped(index, f"{label}: {describe(code)}"))
        elif not quiet:  # transient (timeout, unknown): None now, asked again next time
            detail = describe(code) if code is not None else f"{type(error).__name__}: {error}"
            self._note(index, _scoped(index, f"{label}: {detail}"))

    def _go_down(self, reason: str, error: Exception | None = None,
                 level: int = logging.WARNING) -> None:
        if self._down is None:
            self._down = reason
            self._note(None, reason, level)
            if error is not None:
                log.debug("NVML unusable", exc_info=error)

    def _note(self, index: int | None, reason: str, level: int = logging.INFO) -> None:
        with self._lock:
            if reason in self._reasons:
                return
            self._reasons[reason] = None
            if index is not None:
                self._gpu_reasons.setdefault(index, {})[reason] = None
        log.log(level, "%s", reason)


def _label(function: str) -> str:
    return _LABELS.get(function, function)


def _scoped(index: int | None, text: str) -> str:
    return f"GPU {index}: {text}" if index is not None else f"NVML: {text}"


_shared: NvmlGateway | None = None
_shared_lock = threading.Lock()


def shared_gateway() -> NvmlGateway:
    """The process-wide gateway to the real NVML, shut down at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = NvmlGateway()
            atexit.register(_shared.shutdown)
        return _shared

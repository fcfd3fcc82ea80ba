"""How busy the host is: whether a speed measured now is the machine's speed (docs/design.md, "Host speed").

The load average counts the runnable threads; above BUSY_LOAD_PER_CORE per
core, a matmul timed now shares its cores with other work and reads slow. A
measurement reads the load before and after itself (core.devices.host_speed):
a figure from a busy machine is used, but not cached as the machine's speed.
Where the OS has no load average (Windows), the machine counts as quiet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

BUSY_LOAD_PER_CORE = 1.0  # one runnable thread per core: anything beyond waits, and slows a measurement


@dataclass(frozen=True)
class HostLoad:
    """The 1-minute load average and the logical cores it is shared between (None: unknown)."""

    load_1min: float | None
    cores: int

    @property
    def busy(self) -> bool:
        return self.load_1min is not None and self.load_1min > BUSY_LOAD_PER_CORE * self.cores

    @property
    def text(self) -> str:
        """'load 7.9 on 2 cores'."""
        load = "unknown" if self.load_1min is None else f"{self.load_1min:.1f}"
        return f"load {load} on {self.cores} core{'s' if self.cores != 1 else ''}"


def read_host_load() -> HostLoad:
    """This machine's load now."""
    cores = os.cpu_count() or 1
    try:
        return HostLoad(os.getloadavg()[0], cores)
    except (AttributeError, OSError):
        return HostLoad(None, cores)

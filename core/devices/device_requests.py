"""Device specs as typed on the command line, split into requests (no lookup yet).

    "A100-80GB:70GiB,A100-40GB:36GiB,RTX4090:22GiB"   catalog GPUs with budgets
    "4xH100-SXM"                                        four alike, whole memory
    "2xcpu:2GiB"                                        the host, twice
    "cuda:0:20GiB,cuda:1"                               discovered GPUs
    "auto"                                              every discovered device, free memory

core.planning.device_resolution turns the requests into planner devices; inventory reads
the same terms for simulated GPUs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.errors import InputError
from core.units import parse_bytes

_TERM = re.compile(r"^(?:(\d+)\s*[xX]\s*)?(cuda:\d+|[^:]+?)\s*(?::\s*(.+))?$")


@dataclass(frozen=True)
class DeviceRequest:
    """One comma-separated term: how many, which device, and the budget if given."""

    count: int
    name: str
    budget_bytes: int | None


def parse_device_spec(text: str) -> list[DeviceRequest]:
    """Split a device spec into requests (no lookup yet).

    Raises:
        InputError: a term is malformed or a budget is not a size.
    """
    terms = [term.strip() for term in text.split(",") if term.strip()]
    if not terms:
        raise InputError("no devices given (e.g. --devices \"2xA100-80GB:70GiB\" or \"cpu\")")
    requests = []
    for term in terms:
        match = _TERM.match(term)
        if not match:
            raise InputError(f"cannot read device '{term}' (use NAME, NxNAME or NAME:BUDGET)")
        count = int(match.group(1) or 1)
        if count < 1:
            raise InputError(f"device count must be 1 or more in '{term}'")
        budget = parse_bytes(match.group(3)) if match.group(3) else None
        if budget is not None and budget <= 0:
            raise InputError(f"budget of '{term}' must be more than 0 bytes")
        requests.append(DeviceRequest(count, match.group(2).strip(), budget))
    return requests

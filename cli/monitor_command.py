"""`main.py monitor`: a compact live table of the GPUs and the host, like gpustat --watch.

    python3 main.py monitor                      refresh every second until Ctrl-C
    python3 main.py monitor --interval 0.5 --count 10
    python3 main.py monitor --fake-gpus 8 --pid 1234

On a terminal the table is redrawn in place; piped, each refresh is printed
below the last. Ctrl-C ends it cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from typing import Any, TextIO

from cli.devices_command import add_fake_gpus_option, gateway_from_args
from cli.numbers import positive_float, positive_int
from core.units import GB, GIB, format_bytes, format_gib


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "monitor", help="live GPU and host telemetry in the terminal (Ctrl-C ends)",
        description="Print utilization, memory, temperature, power, SM clock, PCIe traffic "
                    "and GPU processes of every GPU, and the host's CPU and RAM.")
    parser.add_argument("--interval", type=positive_float, default=1.0, metavar="SECONDS",
                        help="seconds between refreshes, 0.2 to 10 (default 1)")
    parser.add_argument("--count", type=positive_int, metavar="N", help="stop after N refreshes")
    parser.add_argument("--pid", type=positive_int, action="append", default=[], metavar="PID",
                        help="also show CPU and RSS of this process (repeatable)")
    add_fake_gpus_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import queue

    from core.devices.telemetry import Snapshot, TelemetrySampler, check_interval
    from core.errors import InputError

    interval_s = check_interval(args.interval)
    if args.count is not None and args.count < 1:
        raise InputError(f"--count must be 1 or more, not {args.count}")
    snapshots: queue.Queue[Snapshot] = queue.Queue()
    sampler = TelemetrySampler(gateway_from_args(args), interval_s=interval_s,
                               on_sample=snapshots.put)
    sampler.set_watched_pids(args.pid)
    screen = _Screen(sys.stdout)
    shown = 0
    said: tuple[str, ...] = ()  # reasons already printed (appended output says each once)
    try:
        sampler.start()
        while args.count is None or shown < args.count:
            try:
                snapshot = snapshots.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive
            except queue.Empty:
                continue
            # in place on a terminal the reasons stay on screen; appended, they are said when they change
            with_reasons = screen.in_place or snapshot.reasons != said
            said = snapshot.reasons
            screen.draw(render(snapshot, fake=args.fake_gpus is not None, reasons=with_reasons))
            shown += 1
    except KeyboardInterrupt:
        screen.newline()
    except BrokenPipeError:  # `monitor | head`: the reader left; end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        sampler.stop()
    return 0


def render(snapshot: Any, fake: bool = False, reasons: bool = True) -> list[str]:
    """One refresh: a host line, one line per GPU, watched processes, reasons (if `reasons`)."""
    host = snapshot.host
    clock = time.strftime("%H:%M:%S", time.localtime(snapshot.time_s))
    lines = [f"{platform.node() or 'host'}  {clock}  "
             f"CPU {_num(host.cpu_percent, '{:5.1f}'):>5} %  RAM {format_gib(host.ram_used_bytes)}/"
             f"{format_gib(host.ram_total_bytes)} GiB{'  [fake NVML]' if fake else ''}"]
    for gpu in snapshot.gpus:
        lines.append(_gpu_line(gpu))
    for process in host.processes:
        state = "" if process.alive else "  (gone)"
        cpu = f"{process.cpu_percent:5.1f} %" if process.cpu_percent is not None else "    ? %"
        rss = format_bytes(process.rss_bytes) if process.rss_bytes is not None else "?"
        lines.append(f"pid {process.pid} {process.name}  CPU {cpu}  RSS {rss}{state}")
    if reasons:
        lines += list(snapshot.reasons)
    return lines


def _gpu_line(gpu: Any) -> str:
    if gpu.lost:
        return f"[{gpu.nvml_index}] {gpu.name:<22} | lost"
    temp = _num(gpu.temperature_c, "{:.0f}°C")
    util = _num(gpu.utilization_percent, "{:3.0f} %")
    memory = f"{_num(gpu.memory_used_bytes, '{:.1f}', GIB)}/{_num(gpu.memory_total_bytes, '{:.1f}', GIB)} GiB"
    power = f"{_num(gpu.power_watts, '{:.0f}')}/{_num(gpu.power_limit_watts, '{:.0f}')} W"
    clock = _num(gpu.sm_clock_mhz, "{:.0f} MHz")
    pcie = (f"rx {_num(gpu.pcie_rx_bytes_per_s, '{:.1f}', GB)} tx "
            f"{_num(gpu.pcie_tx_bytes_per_s, '{:.1f}', GB)} GB/s")
    procs = " ".join(f"{p.name}/{p.pid}({_num(p.used_memory_bytes, '{:.1f}G', GIB)})"
                     for p in gpu.processes)
    return (f"[{gpu.nvml_index}] {gpu.name:<22} | {temp:>5} {util} | {memory:>16} | {power:>9} | "
            f"{clock:>8} | {pcie} | {procs}").rstrip()


def _num(value: float | None, fmt: str, scale: float = 1.0) -> str:
    return "?" if value is None else fmt.format(value / scale)


class _Screen:
    """Redraws a block of lines in place on a terminal (ANSI), appends otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._height = 0

    @property
    def in_place(self) -> bool:
        """True on a terminal: each refresh replaces the last one."""
        return self._tty

    def draw(self, lines: list[str]) -> None:
        if self._tty:
            width = shutil.get_terminal_size().columns
            lines = [line[: width - 1] for line in lines]  # no wrapping: it would break cursor-up
            up = f"\x1b[{self._height}F" if self._height else ""
            body = "".join(f"{line}\x1b[K\n" for line in lines)
            self._stream.write(f"{up}{body}\x1b[J")
        else:
            self._stream.write("\n".join(lines) + "\n\n")
        self._stream.flush()
        self._height = len(lines)

    def newline(self) -> None:
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()

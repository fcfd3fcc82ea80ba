"""The command line: one module per subcommand, each with register() and run().

Modules import heavy libraries (torch, numpy, Qt) inside run(), so that
`main.py plan --problem` and `--help` start fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from cli import (
    cache_command,
    devices_command,
    monitor_command,
    plan_command,
    profile_command,
    runs_command,
    train_command,
)
from cli.numbers import nonnegative_float, nonnegative_int

COMMANDS = (plan_command, devices_command, monitor_command, train_command, runs_command, profile_command,
            cache_command)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"allot: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="main.py",
        description="Allot: optimal layer-to-GPU placement, with live GPU and loss graphs. "
        "With no command, opens the desktop app.",
    )
    parser.add_argument("--project", help="open this project file in the app")
    parser.add_argument("--screenshot", metavar="FILE.png", help="open the app, save a PNG of it, exit")
    parser.add_argument("--settle", type=nonnegative_float, default=0.4, metavar="SECONDS",
                        help="with --screenshot: wait this long after the plan (live plots fill)")
    parser.add_argument("--runs-dir", default="runs", help="where the app looks for run directories")
    parser.add_argument("--fake-gpus", type=nonnegative_int, metavar="N",
                        help="the app with N fake NVML GPUs (a demo; nothing real is measured)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

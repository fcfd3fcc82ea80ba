"""Allot: the desktop app by default, subcommands for the command line.

    python main.py                      the app
    python main.py plan --help          plan a model or an explicit problem
    python main.py devices | monitor    what GPUs there are and what they do
    python main.py train | runs         train with a plan, list runs
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    from cli import build_parser, stderr
    from core.errors import InputError

    args = build_parser().parse_args(argv)
    try:
        if args.command is None:
            from gui.app import run_app  # Qt is imported only for the app

            return run_app(args)
        return int(args.run(args) or 0)
    except InputError as error:
        stderr(f"allot: error: {error}")
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `main.py devices | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

"""Allot: the desktop app by default, subcommands for the command line.

    python3 main.py                      the app
    python3 main.py plan --help          plan a model or an explicit problem
    python3 main.py devices | monitor    what GPUs there are and what they do
    python3 main.py train | runs         train with a plan, list runs
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
            missing = _missing_qt_libraries(bool(args.screenshot))
            if missing:
                stderr(missing)  # instead of Qt's abort (SIGABRT) that names one library at most
                return 2
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


def _missing_qt_libraries(screenshot: bool) -> str | None:
    """One line naming the system libraries Qt's xcb plugin lacks, with the command; None if none."""
    from gui import platform_libs

    if not platform_libs.uses_xcb(os.environ, screenshot):
        return None
    found = platform_libs.diagnose()
    return platform_libs.one_line(found) if found is not None else None


if __name__ == "__main__":
    sys.exit(main())

"""Install Allot's dependencies into the running Python.

    python3 install.py          # the app (with the optional HF extra)
    python3 install.py --test   # the app and everything the tests use

A plain `torch` requirement with no torch installed pulls a CUDA build of
several GB, so where torch is missing the CPU build 2.13.0 goes in first;
an existing torch (a user's own CUDA or ROCm build) is left alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

CPU_TORCH = "torch==2.13.0"
ROOT = Path(__file__).resolve().parent


def pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", action="store_true", help="also install the test tools")
    args = parser.parse_args()
    if importlib.util.find_spec("torch") is None:
        pip(CPU_TORCH)
    extra = "hf,test" if args.test else "hf"
    pip("-q", "-e", f"{ROOT}[{extra}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Install Allot's dependencies into the running Python.

    python3 install.py          # the app (with the optional HF extra)
    python3 install.py --test   # the app and everything the tests use

A plain `torch` requirement with no torch installed pulls a CUDA build of
several GB, so where torch is missing the CPU build 2.13.0 goes in first;
an existing torch (a user's own CUDA or ROCm build) is left alone.

Then the system libraries Qt's xcb platform plugin needs (read from the plugin
with ldd, gui/platform_libs.py): where some are missing and this user can
(root or password-less sudo, with apt-get), their Debian packages are
installed; otherwise the one command to run is printed.

Last (the app's install only: the tests keep a cache of their own), the shipped
models are measured once (`main.py cache --warm`, half a minute), so that the
first plan of one imports neither torch nor transformers.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

CPU_TORCH = "torch==2.13.0"
ROOT = Path(__file__).resolve().parent


def pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def system_libraries() -> int:
    """Install (or say how to install) what Qt's xcb plugin lacks; 0 when nothing is missing after."""
    sys.path.insert(0, str(ROOT))
    from gui import platform_libs as libs  # stdlib only: importable before anything is installed

    found = libs.diagnose()
    if found is None:
        print("Qt's system libraries: all present", flush=True)
        return 0
    print(f"Qt's xcb platform plugin needs libraries this machine lacks: {', '.join(found.missing)}", flush=True)
    if not found.can_install:
        if found.command:
            print(f"run this once, then python3 main.py:\n  {' '.join(found.command)}", flush=True)
        else:
            print("install the packages of your distribution that provide them", flush=True)
        return 1
    sudo = found.command[:1] if found.command[0] == "sudo" else ()
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"installing their Debian packages: {', '.join(found.packages)}", flush=True)
    for command in ((*sudo, "apt-get", "update", "-qq"), found.command):
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True, env=environment)
    still = libs.diagnose()
    if still is not None:
        print(f"still missing: {', '.join(still.missing)}", flush=True)
        return 1
    print("Qt's system libraries: all present now", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", action="store_true", help="also install the test tools")
    args = parser.parse_args()
    if importlib.util.find_spec("torch") is None:
        pip(CPU_TORCH)
    extra = "hf,test" if args.test else "hf"
    pip("-q", "-e", f"{ROOT}[{extra}]")
    system_libraries()  # the app says what is missing at start too; pip's part is done either way
    if not args.test:
        warm_cache()
    return 0


def warm_cache() -> None:
    """Measure the shipped models into the cache; a failure costs the first plans time, nothing else."""
    print("measuring the shipped models once, for fast first plans (main.py cache --warm)", flush=True)
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "cache", "--warm"], check=False)
    if done.returncode != 0:
        print("warming the cache failed: plans will measure their model when first asked", flush=True)


if __name__ == "__main__":
    sys.exit(main())

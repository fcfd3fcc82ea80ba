"""The planning process ends with the app, even when the app is killed hard."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[3]
APP_STAND_IN = """
import time
from core.planning import planning_process
if __name__ == "__main__":
    pool = planning_process.shared_pool()
    print(pool.submit(planning_process.os.getpid).result(timeout=120), flush=True)
    time.sleep(300)
"""


@pytest.mark.slow  # an app stand-in in a subprocess
def test_the_planning_process_exits_when_the_app_is_killed(tmp_path) -> None:
    script = tmp_path / "app.py"
    script.write_text(APP_STAND_IN)
    app = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                           env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    try:
        planner = psutil.Process(int(app.stdout.readline()))
        assert planner.is_running()
        app.kill()  # kill -9: no atexit, no pool shutdown
        app.wait()
        deadline = time.monotonic() + 10
        while planner.is_running() and planner.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not planner.is_running() or planner.status() == psutil.STATUS_ZOMBIE
    finally:
        app.kill()

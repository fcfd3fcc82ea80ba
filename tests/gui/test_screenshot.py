"""`python3 main.py --screenshot FILE.png` writes a PNG of the window and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtGui import QImage

from core.project import save_project
from tests.gui.conftest import small_project

ROOT = Path(__file__).resolve().parents[2]


def run_main(*args: str, config_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ALLOT_CONFIG_DIR=str(config_dir), QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)


@pytest.mark.slow  # the app in a subprocess: Qt, torch and a first plan
def test_screenshot_writes_a_png_and_exits_0(tmp_path) -> None:
    project = tmp_path / "p.allot.json"
    save_project(small_project(("A100-80GB", "RTX4090"), model="gpt-nano"), project)
    out = tmp_path / "shots" / "window.png"
    config = tmp_path / "config"
    config.mkdir()
    recent = '{"recent": ["/somewhere/mine.allot.json"]}'
    (config / "recent.json").write_text(recent)
    result = run_main("--screenshot", str(out), "--project", str(project), config_dir=config)
    assert result.returncode == 0, result.stderr
    assert (config / "recent.json").read_text() == recent  # the next plain start opens what it did before
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = QImage(str(out))
    assert image.width() >= 1200 and image.height() >= 800
    assert "before the plan settled" not in result.stderr
    assert len({image.pixel(x, y) for x in range(0, image.width(), 40) for y in range(0, image.height(), 40)}) > 20


def test_screenshot_of_a_bad_project_is_an_error(tmp_path) -> None:
    project = tmp_path / "bad.allot.json"
    project.write_text("[]")
    result = run_main("--screenshot", str(tmp_path / "x.png"), "--project", str(project), config_dir=tmp_path)
    assert result.returncode == 2
    assert "is not an Allot project" in result.stderr and not (tmp_path / "x.png").exists()


@pytest.mark.slow  # the app in a subprocess beside a stand-in job
def test_screenshot_with_a_run_in_progress_leaves_it_running_and_exits(tmp_path) -> None:
    """Closing the window asks whether to stop a live run; a screenshot must not wait for an answer."""
    import json
    import socket
    import time

    from core.training.run_dir import process_create_time

    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])  # stands in for the job
    try:
        run = tmp_path / "runs" / "live"
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"config": {"steps": 100, "engine": "local"},
                                                     "model": {"name": "gpt-nano"}}))
        (run / "plan.json").write_text(json.dumps({"status": "optimal", "stages": []}))
        (run / "status.json").write_text(json.dumps({
            "state": "running", "step": 3, "pids": {"job": job.pid}, "host": socket.gethostname(),
            "started_at": time.time(),
            "job_create_time": process_create_time(job.pid)}))
        project = tmp_path / "p.allot.json"
        save_project(small_project(("A100-80GB",), model="gpt-nano"), project)
        out = tmp_path / "window.png"
        result = run_main("--runs-dir", str(tmp_path / "runs"), "--screenshot", str(out), "--project",
                          str(project), config_dir=tmp_path / "config")
        assert result.returncode == 0, result.stderr
        assert out.exists() and job.poll() is None  # the run was left alone
        assert not (run / "STOP").exists() and json.loads((run / "status.json").read_text())["state"] == "running"
    finally:
        job.kill()
        job.wait()

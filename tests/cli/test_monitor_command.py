"""`main.py monitor`: counted runs, bounds, Ctrl-C, and in-place redraw."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.monitor_command import _Screen

ROOT = Path(__file__).resolve().parents[2]


def monitor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "main.py", "monitor", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_count_with_fake_gpus() -> None:
    result = monitor("--fake-gpus", "8", "--count", "2", "--interval", "0.2")
    assert result.returncode == 0, result.stderr
    frames = [frame for frame in result.stdout.split("\n\n") if frame.strip()]
    assert len(frames) == 2
    lines = frames[1].splitlines()
    assert "RAM" in lines[0] and "[fake NVML]" in lines[0]
    assert [line[:3] for line in lines[1:9]] == [f"[{i}]" for i in range(8)]
    assert all(" W " in line and "GiB" in line for line in lines[1:9])


@pytest.mark.slow
def test_without_gpus_shows_the_host_and_the_reason() -> None:
    result = monitor("--count", "1", "--interval", "0.2")
    assert result.returncode == 0, result.stderr
    assert "RAM" in result.stdout
    assert "NVML: " in result.stdout or "[0]" in result.stdout  # the reason, or real GPUs


@pytest.mark.parametrize("args", [("--interval", "0.1"), ("--interval", "11"), ("--count", "0")])
def test_bad_arguments_exit_2(args: tuple[str, str]) -> None:
    result = monitor(*args)
    assert result.returncode == 2 and result.stderr.startswith("allot: error:")


@pytest.mark.slow
def test_ctrl_c_ends_cleanly() -> None:
    # A suite started in the background by a shell without job control (`cmd &`) ignores SIGINT,
    # and a child inherits an ignored signal: give it the default, as a terminal would.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen([sys.executable, "main.py", "monitor", "--fake-gpus", "2",
                                    "--interval", "0.2"], cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert process.stdout is not None
    first = process.stdout.readline()  # running and drawing
    assert "RAM" in first
    time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=30)  # a second or two; generous for a loaded machine
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        frames = out.count("RAM")  # still drawing every 0.2 s: the signal went unheeded
        pytest.fail(f"monitor still running 30 s after Ctrl-C, {frames} frames after the first; stderr: {err[-500:]}")
    assert process.returncode == 0
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_redraws_in_place_on_a_terminal() -> None:
    stream = Tty()
    screen = _Screen(stream)
    screen.draw(["a", "b", "c"])
    assert "\x1b[" not in stream.getvalue().split("\x1b[K")[0]  # first frame: no cursor move
    screen.draw(["d", "e"])
    second = stream.getvalue().split("\x1b[J", 1)[1]
    assert second.startswith("\x1b[3F")  # back up over the three lines drawn before
    assert second.endswith("e\x1b[K\n\x1b[J")  # and clear what the taller frame left


def test_appends_when_piped() -> None:
    stream = io.StringIO()
    screen = _Screen(stream)
    screen.draw(["a"])
    screen.draw(["b"])
    assert stream.getvalue() == "a\n\nb\n\n"


@pytest.mark.slow
def test_appended_output_says_the_nvml_reason_once_and_the_first_cpu_figure() -> None:
    result = monitor("--count", "3", "--interval", "0.2")
    assert result.returncode == 0, result.stderr
    frames = [frame for frame in result.stdout.split("\n\n") if frame.strip()]
    assert len(frames) == 3
    if "NVML: " in result.stdout:  # a machine without the driver: the reason once, not every tick
        assert result.stdout.count("NVML: ") == 1 and "NVML: " in frames[0]
    assert "CPU     ? %" not in frames[0] and "CPU  ?" not in frames[0]  # the first tick has a figure
    assert "?" not in frames[0].splitlines()[0]

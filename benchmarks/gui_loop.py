"""What gui_bench measures with: a fast tick on the GUI thread, and the real event loop driven
at a hand's pace; the process's CPU time and memory.

The app idles and takes input in Qt's event loop, so the measures run one too: a loop
of processEvents() and sleeps let the tick fall due while the script slept and counted
two frames as one stall, and cost 2.3% of a core by itself.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QElapsedTimer, QEventLoop, Qt, QTimer

TICK_MS = 5


class StallMeter:
    """Gaps between ticks of a fast QTimer: how long the GUI thread was unavailable."""

    def __init__(self) -> None:
        self.gaps_ms: list[float] = []
        self._clock = QElapsedTimer()
        self._last = 0.0
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._tick)

    def start(self) -> None:
        self.gaps_ms.clear()
        self._clock.start()
        self._last = self._clock.nsecsElapsed() / 1e6
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def _tick(self) -> None:
        now = self._clock.nsecsElapsed() / 1e6
        self.gaps_ms.append(now - self._last)
        self._last = now

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.gaps_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def run_loop(step, timeout_s: float) -> None:
    """Run the real event loop, calling `step()` every millisecond, until it returns True or time runs out.

    What a user does (a mouse move, a slider step) is done in `step`, inside the loop, as Qt
    delivers input. A loop of processEvents() and sleep() instead let the tick fall due while
    the script slept and then did the next action first: two frames showed as one stall.
    """
    if step():
        return
    loop = QEventLoop()
    deadline = time.monotonic() + timeout_s
    poll = QTimer()
    poll.setTimerType(Qt.TimerType.PreciseTimer)
    poll.setInterval(1)
    poll.timeout.connect(lambda: (step() or time.monotonic() >= deadline) and loop.quit())
    poll.start()
    loop.exec()
    poll.stop()


def wait_until(condition, timeout_s: float) -> bool:
    run_loop(condition, timeout_s)
    return bool(condition())


def paced(actions: list, interval_s: float):
    """A `run_loop` step doing one action per `interval_s` (as a hand would), True after the last."""
    started, done = time.perf_counter(), [0]

    def step() -> bool:
        if done[0] < len(actions) and time.perf_counter() >= started + done[0] * interval_s:
            actions[done[0]]()
            done[0] += 1
        return done[0] >= len(actions) and time.perf_counter() >= started + done[0] * interval_s

    return step


def idle_cpu_percent(seconds: float) -> float:
    """Process CPU seconds per wall second x 100, the event loop running and untouched.

    The app idles in its event loop, so this runs one (QEventLoop, ended by a timer) with
    nothing polling: a loop polling processEvents every 2 ms cost 2.3% of a core by itself
    (the Training tab measured 2.44% so, 0.14% in an event loop).
    """
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    cpu, wall = time.process_time(), time.perf_counter()
    loop.exec()
    return (time.process_time() - cpu) / (time.perf_counter() - wall) * 100


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20

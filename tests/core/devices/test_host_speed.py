"""The host's speed: the best of several runs, kept per machine with its date and torch version."""

from __future__ import annotations

import datetime
import json
from dataclasses import replace

from core.devices import host_speed as hs

TODAY = datetime.date(2026, 11, 30)


def test_the_best_of_several_runs_is_kept():
    # A loaded machine slows some runs down (0.02, 0.05); the fastest is what the CPU can do.
    rates = iter([0.05, 0.21, 0.02, 0.20, 0.19])
    assert hs.best_of_runs(lambda: next(rates), runs=5) == 0.21


def speed(**changes) -> hs.HostSpeed:
    base = hs.HostSpeed(0.25, "2026-11-20", "2.13.0", 2, "vm|x86_64|2", cached=False)
    return replace(base, **changes)


def test_cache_round_trip_per_machine(tmp_path):
    path = tmp_path / "allot" / hs.CACHE_FILE
    hs.write_cached(path, speed())
    hs.write_cached(path, speed(machine="other|arm|8", peak_tflops=1.5))
    data = json.loads(path.read_text())
    assert set(data["machines"]) == {"vm|x86_64|2", "other|arm|8"}
    assert data["machines"]["vm|x86_64|2"] == {"peak_tflops": 0.25, "measured_on": "2026-11-20",
                                               "torch_version": "2.13.0", "threads": 2}
    found = hs.read_cached(path, "vm|x86_64|2", "2.13.0", 2, TODAY)
    assert found == speed(cached=True)
    assert found.source == "measured 2026-11-20 (torch 2.13.0, 2 threads)"


def test_a_new_torch_other_threads_or_an_old_figure_measure_again(tmp_path):
    path = tmp_path / hs.CACHE_FILE
    hs.write_cached(path, speed())
    assert hs.read_cached(path, "vm|x86_64|2", "2.14.0", 2, TODAY) is None
    assert hs.read_cached(path, "vm|x86_64|2", "2.13.0", 1, TODAY) is None
    assert hs.read_cached(path, "elsewhere", "2.13.0", 2, TODAY) is None
    later = TODAY + datetime.timedelta(days=hs.MAX_AGE_DAYS + 1)
    assert hs.read_cached(path, "vm|x86_64|2", "2.13.0", 2, later) is None


def test_a_broken_cache_file_is_measured_over(tmp_path):
    path = tmp_path / hs.CACHE_FILE
    path.write_text("{not json")
    assert hs.read_cached(path, "vm|x86_64|2", "2.13.0", 2, TODAY) is None
    hs.write_cached(path, speed())
    assert hs.read_cached(path, "vm|x86_64|2", "2.13.0", 2, TODAY) is not None


def test_host_speed_measures_once_then_reads_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOT_CACHE_DIR", str(tmp_path))
    calls = []
    monkeypatch.setattr(hs, "_matmul_tflops", lambda: calls.append(1) or 0.3)
    hs.host_speed.cache_clear()
    try:
        first = hs.host_speed()
        assert not first.cached and first.peak_tflops == 0.3 and len(calls) == hs.RUNS
        hs.host_speed.cache_clear()  # a new process
        second = hs.host_speed()
        assert second.cached and second.peak_tflops == 0.3 and len(calls) == hs.RUNS  # not measured again
    finally:
        hs.host_speed.cache_clear()


def test_remeasuring_overwrites_a_fresh_entry_and_this_process_plans_with_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOT_CACHE_DIR", str(tmp_path))
    later = [0.2, 0.35] + [0.3] * (hs.REMEASURE_RUNS - 2)
    rates = iter([0.01] * hs.RUNS + later)  # the first figure was taken under load
    monkeypatch.setattr(hs, "_matmul_tflops", lambda: next(rates))
    hs.host_speed.cache_clear()
    try:
        assert hs.host_speed().peak_tflops == 0.01  # cached for 30 days: it would stick
        result = hs.remeasure_host_speed()
        assert result.old is not None and result.old.peak_tflops == 0.01
        assert result.new.peak_tflops == 0.35 and result.new.measured_on == datetime.date.today().isoformat()
        assert result.path == tmp_path / hs.CACHE_FILE
        assert hs.read_entry(result.path, hs.machine_key()).peak_tflops == 0.35  # on disk
        assert hs.host_speed().peak_tflops == 0.35 == hs.measure_cpu_tflops()  # and in this process
        assert next(rates, None) is None  # every run was asked for: REMEASURE_RUNS of them
    finally:
        hs.host_speed.cache_clear()


def test_remeasuring_with_no_entry_and_an_old_one(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(hs, "_matmul_tflops", lambda: 0.4)
    try:
        assert hs.remeasure_host_speed(runs=2).old is None
        path = tmp_path / hs.CACHE_FILE
        hs.write_cached(path, speed(machine=hs.machine_key(), measured_on="2020-01-01", torch_version="1.0"))
        old = hs.remeasure_host_speed(runs=2).old  # stale entries are reported too: what was there
        assert old is not None and old.measured_on == "2020-01-01" and old.torch_version == "1.0"
    finally:
        hs.host_speed.cache_clear()

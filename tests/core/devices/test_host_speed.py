"""The host's speed: the best of several runs, kept per machine, precision and shape with its date and
torch version; a figure from a busy machine is not cached (docs/design.md, "Host speed")."""

from __future__ import annotations

import datetime
import json
from dataclasses import replace

import pytest

from core.devices import host_speed as hs
from core.devices.host_load import BUSY_LOAD_PER_CORE, HostLoad

TODAY = datetime.date(2026, 11, 30)


def test_the_best_of_several_runs_is_kept():
    # A loaded machine slows some runs down (0.02, 0.05); the fastest is what the CPU can do.
    rates = iter([0.05, 0.21, 0.02, 0.20, 0.19])
    assert hs.best_of_runs(lambda: next(rates), runs=5) == 0.21


def speed(**changes) -> hs.HostSpeed:
    base = hs.HostSpeed(0.25, "2026-11-20", "2.13.0", 2, "vm|x86_64|2", cached=False)
    return replace(base, **changes)


KEY = "vm|x86_64|2 fp32 block 1x128x512x2048"
QUIET, BUSY = HostLoad(0.5, 2), HostLoad(2 * BUSY_LOAD_PER_CORE + 3.5, 2)


def test_cache_round_trip_per_machine_precision_and_shape(tmp_path):
    path = tmp_path / "allot" / hs.CACHE_FILE
    hs.write_cached(path, speed())
    hs.write_cached(path, speed(machine="other|arm|8", peak_tflops=1.5))
    hs.write_cached(path, speed(precision="bf16", shape="block 1x256x384x1536", peak_tflops=0.09))
    data = json.loads(path.read_text())
    assert set(data["machines"]) == {KEY, "other|arm|8 fp32 block 1x128x512x2048", "vm|x86_64|2 bf16 block 1x256x384x1536"}
    assert data["machines"][KEY] == {"peak_tflops": 0.25, "measured_on": "2026-11-20", "torch_version": "2.13.0",
                                     "threads": 2, "machine": "vm|x86_64|2", "precision": "fp32",
                                     "shape": "block 1x128x512x2048"}
    found = hs.read_cached(path, KEY, "2.13.0", 2, TODAY)
    assert found == speed(cached=True)
    assert found.source == "measured 2026-11-20 (torch 2.13.0, 2 threads, fp32 block 1x128x512x2048)"
    bf16 = hs.read_cached(path, hs.entry_key("vm|x86_64|2", "bf16", hs.BlockShape(1, 256, 384, 1536)), "2.13.0", 2,
                          TODAY)
    assert bf16 is not None and bf16.peak_tflops == 0.09 and bf16.precision == "bf16"


def test_an_entry_of_the_old_format_is_measured_over(tmp_path):
    path = tmp_path / hs.CACHE_FILE  # one fp32 figure per machine, before precisions and shapes
    path.write_text(json.dumps({"machines": {"vm|x86_64|2": {"peak_tflops": 0.03, "measured_on": "2026-11-20",
                                                             "torch_version": "2.13.0", "threads": 2}}}))
    assert hs.read_cached(path, KEY, "2.13.0", 2, TODAY) is None
    hs.write_cached(path, speed())
    assert hs.read_cached(path, KEY, "2.13.0", 2, TODAY) is not None


def test_a_new_torch_other_threads_or_an_old_figure_measure_again(tmp_path):
    path = tmp_path / hs.CACHE_FILE
    hs.write_cached(path, speed())
    assert hs.read_cached(path, KEY, "2.14.0", 2, TODAY) is None
    assert hs.read_cached(path, KEY, "2.13.0", 1, TODAY) is None
    assert hs.read_cached(path, "elsewhere fp32 block 1x128x512x2048", "2.13.0", 2, TODAY) is None
    later = TODAY + datetime.timedelta(days=hs.MAX_AGE_DAYS + 1)
    assert hs.read_cached(path, KEY, "2.13.0", 2, later) is None


def test_a_broken_cache_file_is_measured_over(tmp_path):
    path = tmp_path / hs.CACHE_FILE
    path.write_text("{not json")
    assert hs.read_cached(path, KEY, "2.13.0", 2, TODAY) is None
    hs.write_cached(path, speed())
    assert hs.read_cached(path, KEY, "2.13.0", 2, TODAY) is not None


def test_a_block_like_the_models_capped_to_a_short_measurement():
    micro = hs.BlockShape.of_block(8 * 256, 256, 384, 1536)  # gpt-micro, 8 x 256 tokens a micro-batch
    assert micro == hs.BlockShape(1, 256, 384, 1536)  # 282 rows keep a set under 3 GFLOP: one whole sequence
    assert micro.matmul_flops == 3 * 2 * 256 * 384 * (1152 + 384 + 1536 + 1536) <= hs.MAX_SET_FLOPS
    assert hs.BlockShape.of_block(8 * 256, 128, 384, 1536) == hs.BlockShape(2, 128, 384, 1536)  # whole sequences
    assert hs.BlockShape.of_block(4 * 32, 32, 128, 512) == hs.BlockShape(4, 32, 128, 512)  # small: as it is
    assert hs.BlockShape.of_block(4096, 4096, 8192, 28672) == hs.BlockShape(1, 64, 1024, 4096)  # llama-70b: capped
    assert micro.label == "block 1x256x384x1536"


def test_each_precision_and_shape_is_measured_and_cached_on_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(hs, "read_host_load", lambda: QUIET)
    asked = []
    rates = {"fp32": 0.03, "bf16": 0.09}
    monkeypatch.setattr(hs, "_block_tflops", lambda shape, precision, threads: asked.append((shape, precision))
                        or rates[precision])
    micro = hs.BlockShape(1, 256, 384, 1536)
    hs.host_speed.cache_clear()
    try:
        assert hs.measure_cpu_tflops("bf16", micro) == 0.09 and hs.measure_cpu_tflops("fp32") == 0.03
        assert asked == [(micro, "bf16")] * hs.RUNS + [(hs.NO_MODEL, "fp32")] * hs.RUNS
        hs.host_speed.cache_clear()  # a new process: both from the cache
        assert hs.host_speed("bf16", micro).cached and hs.host_speed("fp32").cached
        assert len(asked) == 2 * hs.RUNS
        assert "bf16 block 1x256x384x1536" in hs.host_speed("bf16", micro).source
    finally:
        hs.host_speed.cache_clear()


def test_a_figure_from_a_busy_machine_takes_more_runs_and_is_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(hs, "read_host_load", lambda: BUSY)
    calls = []
    monkeypatch.setattr(hs, "_block_tflops", lambda *shape_and_precision: calls.append(1) or 0.01)
    hs.host_speed.cache_clear()
    try:
        busy = hs.host_speed()
        assert busy.peak_tflops == 0.01 and not busy.cached and len(calls) == hs.RUNS * hs.BUSY_RUNS_FACTOR
        assert busy.busy_note == "load 5.5 on 2 cores"
        assert busy.source.endswith("; busy machine (load 5.5 on 2 cores): not cached, measured again next time")
        assert not (tmp_path / hs.CACHE_FILE).exists()
        monkeypatch.setattr(hs, "read_host_load", lambda: QUIET)  # the next process, on a quiet machine
        hs.host_speed.cache_clear()
        quiet = hs.host_speed()
        assert not quiet.cached and not quiet.busy_note and len(calls) == hs.RUNS * (hs.BUSY_RUNS_FACTOR + 1)
        assert (tmp_path / hs.CACHE_FILE).exists()
    finally:
        hs.host_speed.cache_clear()


@pytest.mark.slow
def test_a_machine_that_quietens_during_the_retry_is_cached():
    loads = iter([BUSY, BUSY, QUIET])  # before, after the first runs, after the retry
    measured = hs.measure_now(3, read_load=lambda: next(loads))
    assert measured.busy_note == ""
    assert next(loads, None) is None


def test_the_load_reading():
    assert HostLoad(2.0, 2).busy is False and HostLoad(2.1, 2).busy is True  # more runnable threads than cores
    assert HostLoad(None, 4).busy is False and HostLoad(None, 4).text == "load unknown on 4 cores"
    assert HostLoad(0.25, 1).text == "load 0.2 on 1 core"


def test_host_speed_measures_once_then_reads_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(hs, "read_host_load", lambda: QUIET)
    calls = []
    monkeypatch.setattr(hs, "_block_tflops", lambda *shape_and_precision: calls.append(1) or 0.3)
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
    rates = iter([0.01] * hs.RUNS + later)  # the first figure was taken under load the load average missed
    monkeypatch.setattr(hs, "read_host_load", lambda: QUIET)
    monkeypatch.setattr(hs, "_block_tflops", lambda *shape_and_precision: next(rates))
    hs.host_speed.cache_clear()
    try:
        assert hs.host_speed().peak_tflops == 0.01  # cached for 30 days: it would stick
        result = hs.remeasure_host_speed()
        assert result.old is not None and result.old.peak_tflops == 0.01
        assert result.new.peak_tflops == 0.35 and result.new.measured_on == datetime.date.today().isoformat()
        assert result.path == tmp_path / hs.CACHE_FILE
        assert hs.read_entry(result.path, hs.entry_key(hs.machine_key(), "fp32", hs.NO_MODEL)).peak_tflops == 0.35
        assert hs.host_speed().peak_tflops == 0.35 == hs.measure_cpu_tflops()  # and in this process
        assert next(rates, None) is None  # every run was asked for: REMEASURE_RUNS of them
    finally:
        hs.host_speed.cache_clear()


def test_remeasuring_with_no_entry_and_an_old_one(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(hs, "read_host_load", lambda: QUIET)
    monkeypatch.setattr(hs, "_block_tflops", lambda *shape_and_precision: 0.4)
    try:
        assert hs.remeasure_host_speed(runs=2).old is None
        path = tmp_path / hs.CACHE_FILE
        hs.write_cached(path, speed(machine=hs.machine_key(), measured_on="2020-01-01", torch_version="1.0"))
        old = hs.remeasure_host_speed(runs=2).old  # stale entries are reported too: what was there
        assert old is not None and old.measured_on == "2020-01-01" and old.torch_version == "1.0"
    finally:
        hs.host_speed.cache_clear()


def test_one_stage_process_is_measured_with_its_threads_under_its_own_key(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # the machine's threads, as the cache counts them
    monkeypatch.setattr(hs, "read_host_load", lambda: QUIET)
    asked = []
    monkeypatch.setattr(hs, "_block_tflops", lambda shape, precision, threads: asked.append(threads)
                        or {None: 0.08, 2: 0.05}[threads])
    hs.host_speed.cache_clear()
    try:
        one_of_two = hs.host_speed("fp32", hs.NO_MODEL, 2)  # 2 stage processes on 4 cores
        whole = hs.host_speed("fp32", hs.NO_MODEL, 4)  # all of them: the machine's figure
        assert (one_of_two.peak_tflops, one_of_two.threads) == (0.05, 2) and (whole.peak_tflops, whole.threads) == (0.08, 4)
        assert asked == [2] * hs.RUNS + [None] * hs.RUNS
        keys = set(json.loads((tmp_path / hs.CACHE_FILE).read_text())["machines"])
        machine = hs.machine_key()
        assert keys == {f"{machine} fp32 block 1x128x512x2048 2 threads", f"{machine} fp32 block 1x128x512x2048"}
        hs.host_speed.cache_clear()
        assert hs.host_speed("fp32", hs.NO_MODEL, 2).cached and hs.host_speed("fp32", hs.NO_MODEL, 2).peak_tflops == 0.05
    finally:
        hs.host_speed.cache_clear()

"""`main.py devices` as a user runs it: exit codes, JSON shape, the table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "main.py", "devices", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_json_exits_0_with_the_host_and_the_nvml_reason() -> None:
    result = run("--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) >= {"host", "gpus", "nvml_reason", "simulated", "links", "reasons"}
    assert data["host"]["memory_total_bytes"] > 0 and data["host"]["logical_cores"] >= 1
    # Without NVIDIA hardware (CI): no GPU and the reason; with it: GPUs and no reason.
    assert bool(data["gpus"]) != bool(data["nvml_reason"])
    if not data["gpus"]:
        assert data["nvml_reason"].startswith("NVML: ")
    assert "Traceback" not in result.stderr


def test_json_with_fake_gpus_and_simulated() -> None:
    result = run("--json", "--fake-gpus", "8", "--simulate", "2 x H100-SXM")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["gpus"]) == 8 and data["nvml_reason"] is None and data["fake"] is True
    gpu = data["gpus"][0]
    for key in ("nvml_index", "torch_index", "uuid", "name", "memory_total_bytes", "memory_used_bytes",
                "memory_free_bytes", "compute_capability", "power_limit_watts", "max_sm_clock_mhz",
                "pcie_generation", "pcie_width_lanes", "nvlink_peers", "link_bandwidth_gbps",
                "catalog_name"):
        assert key in gpu
    assert gpu["catalog_name"] == "H100-SXM" and gpu["link_bandwidth_gbps"] == 450.0
    assert [g["simulated"] for g in data["simulated"]] == [True, True]
    assert len(data["links"]) == 28


def test_table() -> None:
    result = run("--fake-gpus", "4")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Host ")
    assert "NVIDIA H100 80GB HBM3" in result.stdout and "Topology" in result.stdout
    plain = run()
    assert plain.returncode == 0 and plain.stdout.startswith("Host ")


def test_bad_input_exits_2_with_one_line() -> None:
    for args in (("--fake-gpus", "100"), ("--simulate", "3 x NoSuchGPU")):
        result = run(*args)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("allot: error:")


def test_measure_host_prints_the_old_and_new_figure_and_overwrites_the_cache(tmp_path, monkeypatch, capsys) -> None:
    import main
    from core.devices import host_speed as hs

    monkeypatch.setenv("ALLOT_CACHE_DIR", str(tmp_path))
    path = tmp_path / hs.CACHE_FILE
    hs.write_cached(path, hs.HostSpeed(0.01, "2026-11-20", "2.13.0", 2, hs.machine_key(), cached=False))
    monkeypatch.setattr(hs, "_block_tflops", lambda *shape_and_precision: 0.02)  # no real timing in tests
    try:
        assert main.main(["devices", "--measure-host"]) == 0
    finally:
        hs.host_speed.cache_clear()
    before, now, before_bf16, now_bf16, saved = capsys.readouterr().out.splitlines()
    assert before == ("host speed (fp32) before: 0.01 TFLOP/s, measured 2026-11-20 "
                      "(torch 2.13.0, 2 threads, fp32 block 1x128x512x2048)")
    assert now.startswith("host speed (fp32) now:    0.02 TFLOP/s, measured ") and "(+100%); best of" in now
    assert before_bf16 == "host speed (bf16) before: none cached"  # each precision has its own figure
    assert now_bf16.startswith("host speed (bf16) now:    0.02 TFLOP/s, measured ")
    assert saved == f"saved to {path}"
    assert hs.read_entry(path, hs.entry_key(hs.machine_key(), "fp32", hs.NO_MODEL)).peak_tflops == 0.02


def test_measure_host_takes_no_other_option(capsys) -> None:
    import main

    assert main.main(["devices", "--measure-host", "--json"]) == 2
    assert capsys.readouterr().err == "allot: error: --measure-host takes no other option\n"

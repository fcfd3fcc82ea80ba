"""Device choices into planner devices: specs as users type them, and the app's device list."""

from dataclasses import replace

import pytest

from core.devices.catalog import load_catalog
from core.devices.device_requests import parse_device_spec
from core.errors import InputError
from core.planning.device_resolution import DeviceEntry, resolve_devices
from core.project import simulated_entry

GiB = 1024**3


def host_entry(total: int = 64 * GiB) -> DeviceEntry:
    return DeviceEntry(name="cpu", kind="host", memory_total_bytes=total, budget_bytes=total // 2)


def test_catalog_devices_with_budgets_any_case():
    devices = resolve_devices("a100-80gb:70GiB,A100-40GB:36GiB,rtx4090:22GiB", precision="bf16", efficiency=0.5)
    assert [d.name for d in devices] == ["A100-80GB", "A100-40GB", "RTX4090"]
    assert [d.budget_bytes for d in devices] == [70 * GiB, 36 * GiB, 22 * GiB]
    assert devices[0].tflops == pytest.approx(312.0 * 0.5)  # bf16 dense datasheet x efficiency
    assert devices[2].tflops == pytest.approx(165.2 * 0.5)


def test_n_alike_get_numbered_names_and_nvlink():
    devices = resolve_devices("4xH100-SXM", precision="fp32", efficiency=1.0)
    assert [d.name for d in devices] == ["H100-SXM", "H100-SXM#2", "H100-SXM#3", "H100-SXM#4"]
    assert all(d.bandwidth_gbps == 450.0 for d in devices)  # NVLink, per direction
    assert devices[0].tflops == pytest.approx(66.9)
    assert devices[0].budget_bytes == load_catalog().find("H100-SXM").memory_bytes


def test_a_single_gpu_uses_pcie():
    (device,) = resolve_devices("L4", precision="bf16", efficiency=1.0)
    assert device.bandwidth_gbps == 32.0  # PCIe 4.0 x16, per direction


def test_gpus_without_bf16_plan_mixed_precision_as_fp16():
    (device,) = resolve_devices("T4", precision="bf16", efficiency=1.0)
    assert device.tflops == pytest.approx(65.0)


def test_cpu_devices_share_the_host(monkeypatch):
    monkeypatch.setattr("core.devices.host_speed.measure_cpu_tflops", lambda precision, shape: 0.2)
    devices = resolve_devices("2xcpu:2GiB", precision="fp32")
    assert [d.name for d in devices] == ["cpu", "cpu#2"]
    assert [d.budget_bytes for d in devices] == [2 * GiB, 2 * GiB]
    assert devices[0].tflops == pytest.approx(0.1)  # two processes share one host


def test_cpu_devices_are_timed_on_the_models_block(monkeypatch):
    """The host's speed is a block's: the model's where it is known (as simulated GPUs run on the host),
    the default block before a model is chosen."""
    from core.devices.host_speed import NO_MODEL, BlockShape
    from core.model.model_spec import resolve_model
    from core.planning.device_resolution import host_block
    from core.planning.setup import TrainingSetup

    timed: list[tuple[str, BlockShape]] = []
    monkeypatch.setattr("core.devices.host_speed.measure_cpu_tflops",
                        lambda precision, shape: timed.append((precision, shape)) or 0.2)
    block = host_block(resolve_model("gpt-micro"), TrainingSetup(micro_batch_size=4, seq_len=128))
    assert (block.d_model, block.ffn, block.seq) == (384, 1536, 128)  # gpt-micro's widths, its sequences
    resolve_devices("cpu", precision="bf16", host_shape=block)
    resolve_devices("cpu", precision="fp32")
    assert timed == [("bf16", block), ("fp32", NO_MODEL)]


def test_budget_units():
    sizes = [r.budget_bytes for r in parse_device_spec("A10:512MiB,A10:1.5GB,A10:2")]
    assert sizes == [512 * 1024**2, 1_500_000_000, 2 * GiB]


@pytest.mark.parametrize("spec, message", [
    ("", "no devices"),
    ("H900", "unknown device 'H900'"),
    ("A100-40GB:60GiB", "exceeds its memory"),
    ("A100-40GB:0GiB", "more than 0"),
    ("A100-40GB:lots", "not a memory size"),
    ("0xA10", "count must be 1 or more"),
])
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(InputError, match=message) as error:
        resolve_devices(spec, precision="bf16")
    assert "\n" not in str(error.value)


def test_app_entries_resolve_with_efficiency_links_and_host_speed() -> None:
    catalog = load_catalog()
    pair = (simulated_entry("A100-80GB"), simulated_entry("A100-80GB", {"A100-80GB"}), simulated_entry("L4"), host_entry())
    devices = resolve_devices(pair, "bf16", host_peak_tflops=2.0)
    assert [d.name for d in devices] == ["A100-80GB", "A100-80GB#2", "L4", "cpu"]
    assert devices[0].tflops == pytest.approx(312.0 * catalog.default_efficiency)
    assert [d.bandwidth_gbps for d in devices] == [300.0, 300.0, 32.0, 10.0]  # two A100s: one NVLink box
    assert devices[3].tflops == pytest.approx(2.0 * catalog.cpu_efficiency) and devices[3].kind == "cpu"
    assert devices[1].budget_bytes == pair[1].budget_bytes
    lone = resolve_devices((pair[0], replace(pair[1], included=False)), "fp32")
    assert [d.bandwidth_gbps for d in lone] == [32.0]
    with pytest.raises(InputError, match="not measured"):
        resolve_devices((host_entry(),), "bf16")
    with pytest.raises(InputError, match="no device is included"):
        resolve_devices((replace(pair[0], included=False),), "bf16")
    with pytest.raises(InputError, match="unknown speed"):
        resolve_devices((DeviceEntry("cuda:0", "gpu", GiB, GiB),), "bf16")

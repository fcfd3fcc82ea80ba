"""Device specs as users type them."""

import pytest

from core.devices.catalog import load_catalog
from core.errors import InputError
from core.planning.devices import parse_device_spec, resolve_devices

GiB = 1024**3


def test_catalog_devices_with_budgets_any_case():
    devices = resolve_devices("a100-80gb:70GiB,A100-40GB:36GiB,rtx4090:22GiB", precision="bf16", efficiency=0.5)
    assert [d.name for d in devices] == ["A100-80GB", "A100-40GB", "RTX4090"]
    assert [d.memory_bytes for d in devices] == [70 * GiB, 36 * GiB, 22 * GiB]
    assert devices[0].tflops == pytest.approx(312.0 * 0.5)  # bf16 dense datasheet x efficiency
    assert devices[2].tflops == pytest.approx(165.2 * 0.5)


def test_n_alike_get_numbered_names_and_nvlink():
    devices = resolve_devices("4xH100-SXM", precision="fp32", efficiency=1.0)
    assert [d.name for d in devices] == ["H100-SXM#0", "H100-SXM#1", "H100-SXM#2", "H100-SXM#3"]
    assert all(d.bandwidth_gbps == 450.0 for d in devices)  # NVLink, per direction
    assert devices[0].tflops == pytest.approx(66.9)
    assert devices[0].memory_bytes == load_catalog().find("H100-SXM").memory_bytes


def test_a_single_gpu_uses_pcie():
    (device,) = resolve_devices("L4", precision="bf16", efficiency=1.0)
    assert device.bandwidth_gbps == 32.0  # PCIe 4.0 x16, per direction


def test_gpus_without_bf16_plan_mixed_precision_as_fp16():
    (device,) = resolve_devices("T4", precision="bf16", efficiency=1.0)
    assert device.tflops == pytest.approx(65.0)


def test_cpu_devices_share_the_host(monkeypatch):
    monkeypatch.setattr("core.devices.host_speed.measure_cpu_tflops", lambda: 0.2)
    devices = resolve_devices("2xcpu:2GiB", precision="fp32")
    assert [d.name for d in devices] == ["cpu#0", "cpu#1"]
    assert [d.memory_bytes for d in devices] == [2 * GiB, 2 * GiB]
    assert devices[0].tflops == pytest.approx(0.1)  # two processes share one host


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

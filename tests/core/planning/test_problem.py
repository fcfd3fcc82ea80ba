"""The explicit problem format: round trip, and every malformed input named in one line."""

import json
import math

import pytest

from core.errors import InputError
from core.planning.problem_format import load_problem, problem_from_dict

GOOD = {
    "layers": [
        {"name": "embed", "params": 100, "flops": 1e9, "activation_bytes": 10, "output_bytes": 10},
        {"name": "h.0", "params": 200, "flops": 2e9, "activation_bytes": 20, "output_bytes": 10},
    ],
    "devices": [{"name": "gpu0", "memory_bytes": 8589934592, "tflops": 120.0, "bandwidth_gbps": 25.0}],
    "setup": {"mode": "train", "bytes_per_param": 16, "micro_batches": 8, "schedule": "1f1b"},
}


def with_change(path: str, value: object) -> dict:
    data = json.loads(json.dumps(GOOD))
    target = data
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    if value is KeyError:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return data


def test_round_trip():
    problem = problem_from_dict(GOOD)
    assert problem_from_dict(problem.to_dict()) == problem
    assert problem.is_chain


def test_load_from_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(GOOD))
    assert load_problem(path).layers[1].name == "h.0"


@pytest.mark.parametrize("path, value, message", [
    ("layers.0.params", KeyError, "layer 'embed' is missing 'params'"),
    ("layers.1.flops", -1.0, "h.0'.flops must be 0 or more"),
    ("layers.1.activation_bytes", math.nan, "must be a finite number"),
    ("layers.0.output_bytes", "ten", "must be a finite number"),
    ("layers.0.params", 1.5, "must be a whole number"),
    ("devices", [], "'devices' is empty"),
    ("layers", [], "'layers' is empty"),
    ("devices.0.memory_bytes", 0, "memory_bytes must be greater than 0"),
    ("devices.0.tflops", -3, "tflops must be greater than 0"),
    ("setup.micro_batches", 0, "micro_batches must be 1 or more"),
    ("setup.mode", "fly", "setup.mode must be one of"),
    ("setup.schedule", "zb", "setup.schedule must be one of"),
    ("setup", KeyError, "missing 'setup'"),
    ("layers.1.name", "embed", "duplicate layer name 'embed'"),
    ("layers.1.inputs", ["nowhere"], "reads 'nowhere'"),
])
def test_malformed_problems_name_the_fault(path, value, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        problem_from_dict(with_change(path, value))
    assert "\n" not in str(error.value)


def test_duplicate_device_names():
    data = with_change("devices", GOOD["devices"] * 2)
    with pytest.raises(InputError, match="duplicate device name 'gpu0'"):
        problem_from_dict(data)


def test_budget_above_the_device_memory():
    data = with_change("devices.0.memory_total_bytes", 1024)
    with pytest.raises(InputError, match="exceeds its memory"):
        problem_from_dict(data)


def test_the_format_keeps_design_md_device_keys_and_reads_the_other_names():
    # docs/design.md's format calls the budget memory_bytes (the code: budget_bytes); files written
    # with budget_bytes or total_memory_bytes read the same.
    (device,) = problem_from_dict(GOOD).devices
    assert device.budget_bytes == 8589934592
    assert problem_from_dict(GOOD).to_dict()["devices"] == GOOD["devices"]  # written back as given
    other = with_change("devices.0.total_memory_bytes", 2 * 8589934592)
    other["devices"][0]["budget_bytes"] = other["devices"][0].pop("memory_bytes")
    (device,) = problem_from_dict(other).devices
    assert (device.budget_bytes, device.memory_total_bytes) == (8589934592, 2 * 8589934592)
    written = problem_from_dict(other).to_dict()["devices"][0]
    assert (written["memory_bytes"], written["memory_total_bytes"]) == (8589934592, 2 * 8589934592)
    assert "budget_bytes" not in written and "total_memory_bytes" not in written
    with pytest.raises(InputError, match="exceeds its memory"):
        problem_from_dict(with_change("devices.0.total_memory_bytes", 1024))


def test_unreadable_and_non_json_files(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        load_problem(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not JSON"):
        load_problem(bad)

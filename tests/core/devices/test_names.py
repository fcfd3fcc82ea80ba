"""One place names devices that occur more than once (issue 19 item 4, issue 20 item 4)."""

from core.devices.names import base_name, copy_number, unique_name, unique_names
from core.planning.device_resolution import resolve_devices
from core.project import simulated_entry


def test_copies_are_numbered_from_two_and_names_with_numbers_keep_them():
    assert unique_names(["A100-80GB", "A100-80GB", "cpu", "A100-80GB"]) == ["A100-80GB", "A100-80GB#2", "cpu",
                                                                           "A100-80GB#3"]
    assert unique_names(["A100-80GB#3", "A100-80GB", "A100-80GB"]) == ["A100-80GB#3", "A100-80GB", "A100-80GB#2"]
    assert unique_names(["cpu#2", "cpu#2"]) == ["cpu#2", "cpu#3"]
    assert unique_name("RTX4090", {"RTX4090", "RTX4090#2"}) == "RTX4090#3"
    assert (base_name("H100-SXM#12"), copy_number("H100-SXM#12"), copy_number("H100-SXM")) == ("H100-SXM", 12, 1)
    assert base_name("odd#name") == "odd#name" and base_name("cuda:0") == "cuda:0"


def test_the_app_and_the_command_line_name_the_same_devices_alike():
    entries = []
    for _ in range(3):
        entries.append(simulated_entry("H100-SXM", {e.name for e in entries}))
    from_spec = resolve_devices("3xH100-SXM", precision="fp32", efficiency=1.0)
    assert [e.name for e in entries] == [d.name for d in from_spec] == ["H100-SXM", "H100-SXM#2", "H100-SXM#3"]
    # a spec the app writes for its later copies keeps their numbers
    assert [d.name for d in resolve_devices("H100-SXM#3:10GiB,H100-SXM#2")] == ["H100-SXM#3", "H100-SXM#2"]

"""Start says when simulated GPUs will be run by the host, and plans for the host on request (issue 19 item 4)."""

from __future__ import annotations

from dataclasses import replace

from core.planning.host_note import host_plan_ticks, simulated_on_host, simulated_run_note
from gui.training.training_view import TrainingView
from tests.gui.conftest import small_project, wait_for_plan


def test_a_plan_on_simulated_gpus_offers_a_plan_for_the_host_that_runs_it(make_window, qtbot, tmp_path):
    window = make_window(small_project(("A100-80GB", "RTX4090"), model="gpt-nano"))
    view = TrainingView(window.state, tmp_path / "runs")
    window.set_training_view(view)
    window.tabs.setCurrentWidget(view)
    state = window.state
    assert {d for s in state.plan.stages for d in s.devices} == {"A100-80GB", "RTX4090"}
    offer = view.host_offer
    qtbot.waitUntil(offer.isVisible)
    assert "A100-80GB and RTX4090 are simulated: the host CPU will run them" in offer.note.text()
    view.grab().save(str(tmp_path / "host-offer.png"))
    offer.button.click()
    wait_for_plan(qtbot, state)
    assert [s.devices for s in state.plan.stages] == [("cpu",)]
    assert [(e.name, e.included) for e in state.devices] == [("A100-80GB", False), ("RTX4090", False), ("cpu", True)]
    assert not offer.isVisible()  # the plan is the host's: nothing simulated runs


def test_only_the_simulated_gpus_a_plan_uses_are_named_and_real_gpus_keep_their_ticks():
    project = small_project(("A100-80GB", "RTX4090", "RTX4090"))
    entries = (*project.devices, replace(project.devices[0], name="cuda:0", kind="gpu"))
    from tests.core.training.test_app_request import NANO_LAYERS, plan

    on_one = plan(("RTX4090#2", NANO_LAYERS[:4]), ("cuda:0", NANO_LAYERS[4:]))
    assert simulated_on_host(on_one, entries) == ("RTX4090#2",)
    assert simulated_run_note(on_one, entries) == ("RTX4090#2 is simulated: the host CPU will run it, "
                                                   "on a plan balanced by datasheet speeds.")
    assert simulated_run_note(plan(("cuda:0", NANO_LAYERS)), entries) is None
    assert host_plan_ticks(entries) == {"A100-80GB": False, "RTX4090": False, "RTX4090#2": False, "cpu": True}

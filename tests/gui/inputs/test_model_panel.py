"""The model panel: presets, custom sizes, a local config.json, the training setup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from core.model.presets import HF_CONFIG_DIR
from tests.gui.conftest import small_project, wait_for_plan


def test_choosing_a_preset_and_the_setup_replans(qtbot, make_window) -> None:
    window = make_window(small_project(("A100-80GB", "RTX4090")))
    panel, state = window.model_panel, window.state
    panel.model_box.setCurrentIndex(panel.model_box.findData("preset:gpt-nano"))
    assert state.model.name == "gpt-nano"
    wait_for_plan(qtbot, state)
    assert state.spec.name == "gpt-nano" and state.graph.graph["model"] == "gpt-nano"
    assert "gpt-nano" in panel.summary.text() and "5 blocks" in panel.summary.text()

    micro_batches = panel.setup_boxes["micro_batches"]
    micro_batches.setValue(3)
    assert state.setup.micro_batches == 3
    panel.setup_boxes["schedule"].setCurrentText("gpipe")
    panel.setup_boxes["recompute"].setCurrentText("on")
    assert (state.setup.schedule, state.setup.recompute) == ("gpipe", True)
    wait_for_plan(qtbot, state)
    assert state.plan.micro_batches == 3 and state.problem.setup.schedule == "gpipe"
    assert state.problem.setup.recompute
    panel.setup_boxes["recompute"].setCurrentText("auto")  # the planner decides, and the plan says what
    assert state.setup.recompute == "auto"
    wait_for_plan(qtbot, state)
    assert state.plan.recompute is False and not state.problem.setup.recompute  # gpt-nano fits an A100
    panel.setup_boxes["mode"].setCurrentText("infer")
    assert not panel.setup_boxes["optimizer"].isEnabled()


def test_a_custom_size(qtbot, make_window) -> None:
    window = make_window(small_project(("A100-80GB",), model="gpt-nano"))
    panel, state = window.model_panel, window.state
    panel.model_box.setCurrentIndex(panel.model_box.findData("custom:"))
    assert state.model.source == "custom" and panel.custom["layers"].isVisible()
    panel.custom["layers"].setValue(3)
    panel.custom["d_model"].setValue(64)
    panel.custom["heads"].setValue(4)
    panel.custom["vocab"].setValue(256)
    panel.custom["seq"].setValue(128)
    wait_for_plan(qtbot, state)
    assert state.spec.name == "gpt-custom-3L-64d"
    assert sum(1 for _, data in state.graph.nodes(data=True) if data["is_block"]) == 3


@pytest.mark.slow
def test_a_local_config_and_a_broken_one(qtbot, make_window, tmp_path: Path) -> None:
    window = make_window(small_project(("A100-80GB", "RTX4090"), model="gpt-nano"))
    panel, state = window.model_panel, window.state
    folder = tmp_path / "my-gpt2"
    folder.mkdir()
    config = json.loads((HF_CONFIG_DIR / "gpt2.json").read_text())  # gpt2's own, shrunk to measure fast
    (folder / "config.json").write_text(json.dumps({**config, "n_layer": 2, "n_embd": 64, "n_head": 2}))
    panel.choose_config(str(folder / "config.json"))
    assert panel.model_box.currentData() == "chosen:" and str(folder) in panel.config_label.text()
    assert panel.model_box.currentText() == "my-gpt2  (local config)"
    wait_for_plan(qtbot, state)
    assert state.spec.name == "my-gpt2" and state.plan.feasible and not window.banner.isVisible()

    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"hidden_size": 64}))
    panel.choose_config(str(broken))
    wait_for_plan(qtbot, state)
    assert state.plan is None and "not a Hugging Face config" in state.error
    assert window.banner.isVisible() and window.banner.title == "Cannot plan"
    assert "not a Hugging Face config" in window.banner.text
    assert window.status_text.text() == "Cannot plan: see the banner"

    panel.model_box.setCurrentIndex(panel.model_box.findData("preset:gpt-nano"))
    wait_for_plan(qtbot, state)
    assert state.plan.feasible and not window.banner.isVisible() and state.error == ""


def test_a_sequence_longer_than_the_context_is_a_clear_error(qtbot, make_window) -> None:
    window = make_window(small_project(("A100-80GB", "RTX4090"), model="gpt2"))
    box = window.model_panel.setup_boxes["seq_len"]
    box.setValue(4096)  # gpt2's context is 1024
    qtbot.keyClick(box, Qt.Key.Key_Enter)
    wait_for_plan(qtbot, window.state)
    assert "exceeds gpt2's context of 1024" in window.banner.text


def test_data_parallel_and_zero_boxes_set_the_setup_and_reach_the_planner(qtbot, make_window) -> None:
    window = make_window(small_project(("A100-80GB", "A100-80GB", "RTX4090", "RTX4090")))
    panel, state = window.model_panel, window.state
    replicas, zero = panel.setup_boxes["data_parallel"], panel.setup_boxes["zero"]
    assert (replicas.currentData(), zero.currentData()) == (1, 0)  # a pipeline, as before
    assert [replicas.itemText(i) for i in range(replicas.count())][:3] == ["1", "2", "4"]
    assert replicas.itemText(replicas.count() - 1) == "auto"

    replicas.setCurrentIndex(replicas.findData(2))
    zero.setCurrentIndex(zero.findData(1))
    assert (state.setup.data_parallel, state.setup.zero) == (2, 1)
    replicas.setCurrentIndex(replicas.findData("auto"))
    assert state.setup.data_parallel == "auto"
    wait_for_plan(qtbot, state)
    assert (state.problem.setup.data_parallel, state.problem.setup.zero) == ("auto", 1)  # what was solved


def test_replica_counts_that_do_not_divide_the_micro_batches_are_refused(qtbot, make_window) -> None:
    window = make_window(small_project(("A100-80GB", "A100-80GB", "RTX4090", "RTX4090")))
    panel, state = window.model_panel, window.state
    replicas = panel.setup_boxes["data_parallel"]
    panel.setup_boxes["micro_batches"].setValue(6)
    offered = {replicas.itemData(i): replicas.model().item(i).isEnabled() for i in range(replicas.count())}
    assert offered[1] and offered[2] and offered["auto"] and not offered[4] and not offered[8]
    assert "do not divide the 6 micro-batches" in replicas.model().item(replicas.findData(4)).toolTip()

    panel.setup_boxes["micro_batches"].setValue(8)
    replicas.setCurrentIndex(replicas.findData(4))
    assert state.setup.data_parallel == 4
    panel.setup_boxes["micro_batches"].setValue(6)  # 4 does not divide 6: the largest count that does
    assert (state.setup.micro_batches, state.setup.data_parallel) == (6, 3)
    assert replicas.currentText() == "3" and "Data parallel 4 → 3" in panel.setup_note.text()
    assert panel.setup_note.isVisible()


def test_a_local_model_folder_from_the_file_dialog(qtbot, make_window, tmp_path: Path, monkeypatch) -> None:
    from PySide6.QtWidgets import QFileDialog

    from tests.core.training.engine.hf_support import save_model, tiny_llama_config

    folder = save_model(tiny_llama_config(layers=2, max_position_embeddings=256), tmp_path / "tiny-llama")
    window = make_window(small_project(("A100-80GB", "RTX4090"), model="gpt-nano"))
    panel, state = window.model_panel, window.state
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(folder))
    panel.model_box.setCurrentIndex(panel.model_box.findData("folder:"))
    assert state.model.source == "config" and state.model.name == str(folder)
    # the box names the folder (it said "Local model folder…" before, issue 19 item 6); the item stays to pick another
    assert panel.model_box.currentText() == "tiny-llama  (local model folder)" and str(folder) in panel.config_label.text()
    assert panel.model_box.findData("folder:") >= 0 and panel.model_box.findData("config:") >= 0
    wait_for_plan(qtbot, state)
    assert state.spec.name == "tiny-llama" and state.plan.feasible
    assert [n for n in state.graph.nodes][:2] == ["model.embed_tokens", "model.layers.0"]


def test_choices_that_cannot_apply_are_drawn_grey_and_zero_needs_replicas(qtbot, make_window, tmp_path) -> None:
    """Issue 19 item 6: 16, 32, 64 replicas with 8 micro-batches looked choosable; ZeRO 3 with one replica too."""
    from gui import theme

    window = make_window(small_project(("A100-80GB", "A100-80GB", "RTX4090", "RTX4090")))
    panel, state = window.model_panel, window.state
    replicas, zero = panel.setup_boxes["data_parallel"], panel.setup_boxes["zero"]
    assert state.setup.micro_batches == 8

    def grey(box, data):
        return box.model().item(box.findData(data)).foreground().color().name().upper() == theme.DISABLED_TEXT.upper()

    assert [grey(replicas, n) for n in (1, 2, 4, 8, 16, 32, 64, "auto")] == [False] * 4 + [True] * 3 + [False]
    assert [grey(zero, stage) for stage in range(4)] == [False, True, True, True]  # one replica: nothing to shard
    assert not zero.model().item(zero.findData(3)).isEnabled()
    replicas.setCurrentIndex(replicas.findData(2))
    zero.setCurrentIndex(zero.findData(3))
    assert (state.setup.data_parallel, state.setup.zero) == (2, 3) and not grey(zero, 3)
    replicas.setCurrentIndex(replicas.findData(1))  # back to one replica: ZeRO goes with it, and says so
    assert (state.setup.data_parallel, state.setup.zero) == (1, 0)
    assert "ZeRO 3 → 0" in panel.setup_note.text() and grey(zero, 3)
    replicas.showPopup()
    replicas.view().grab().save(str(tmp_path / "replicas-popup.png"))
    print(tmp_path / "replicas-popup.png")
    replicas.hidePopup()

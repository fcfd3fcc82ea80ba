"""The model and the training setup: presets, a local config.json, a local model
folder (config.json + *.safetensors, to fine-tune) or a custom size.

Spin boxes report only finished values (no keyboard tracking), so typing
"4096" asks for one layer graph, not four. Choice boxes hold their setup
value as item data (the ZeRO box shows words, the data-parallel box "auto").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QStandardItemModel
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from core.errors import InputError
from core.planning.front_door import (
    GPT_PRESETS,
    MODES,
    OPTIMIZERS,
    PRECISIONS,
    RUNNABLE_SCHEDULES,
    TENSOR_PARALLEL_SIZES,
    GPTSize,
    ModelChoice,
    hf_preset_names,
)
from core.units import format_count
from gui import theme
from gui.inputs.finetune_box import FineTuneBox
from gui.state import AppState

CUSTOM = "custom:"
CONFIG = "config:"
FOLDER = "folder:"
CHOSEN = "chosen:"  # the local config or model folder in use, named in the box
SetupBox = QComboBox | QSpinBox  # one widget per TrainingSetup field
DATA_PARALLEL_CHOICES: tuple[int | str, ...] = (1, 2, 4, 8, 16, 32, 64, "auto")
ZERO_LABELS = {0: "0 · none (DDP)", 1: "1 · optimizer state sharded", 2: "2 · + gradients sharded",
               3: "3 · + parameters sharded (FSDP)"}


def model_items() -> list[tuple[str, str]]:
    """(label, "source:name") for the model box: built-ins, then HF presets, then the others."""
    items = [(f"{name}  (built-in GPT)", f"preset:{name}") for name in GPT_PRESETS]
    for name in hf_preset_names():
        key = f"hf/{name}" if name in GPT_PRESETS else name
        items.append((f"{key}  (Hugging Face config)", f"preset:{key}"))
    return [*items, ("Custom GPT size…", CUSTOM), ("Local config.json…", CONFIG), ("Local model folder…", FOLDER)]


def _combo(items: list[tuple[str, object]]) -> QComboBox:
    """A combo box of (label, data) items."""
    box = QComboBox()
    for label, data in items:
        box.addItem(label, data)
    return box


def _mark_items(box: SetupBox, why_not: Callable[[Any], str | None]) -> None:
    """Grey out (and disable) the items of a combo box for which `why_not` gives a reason (its tooltip)."""
    assert isinstance(box, QComboBox)
    model = box.model()
    assert isinstance(model, QStandardItemModel)  # a combo box's own model
    for row in range(box.count()):
        reason = why_not(box.itemData(row))
        item = model.item(row)
        item.setEnabled(reason is None)
        # drawn grey by hand: the style sheet's text colour (QWidget { color }) hides the disabled look
        item.setForeground(QColor(theme.TEXT if reason is None else theme.DISABLED_TEXT))
        item.setToolTip(reason or "")


def _spin(minimum: int, maximum: int, step: int = 1, tip: str = "") -> QSpinBox:
    box = QSpinBox()
    box.setRange(minimum, maximum)
    box.setSingleStep(step)
    box.setKeyboardTracking(False)
    box.setGroupSeparatorShown(True)
    box.setToolTip(tip)
    return box


class ModelPanel(QWidget):
    """Model choice and training setup; binds to the state's model and setup."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._updating = False
        self.model_box = QComboBox()
        for label, data in model_items():
            self.model_box.addItem(label, data)
        self.model_box.insertSeparator(self.model_box.count() - 3)
        self.config_label = QLabel()
        self.config_label.setObjectName("muted")
        self.config_label.setWordWrap(True)
        self.summary = QLabel("building the layer graph…")
        self.summary.setObjectName("muted")
        self.summary.setWordWrap(True)
        self.custom = {key: _spin(1, 1_000_000) for key in GPTSize.__dataclass_fields__}
        self.custom["d_model"].setSingleStep(64)
        self.setup_boxes = self._setup_widgets()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._model_group())
        layout.addWidget(self._setup_group())
        self.finetune_box = FineTuneBox(state)
        layout.addWidget(self.finetune_box)
        layout.addStretch(1)
        self.model_box.currentIndexChanged.connect(self._model_picked)
        for box in self.custom.values():
            box.valueChanged.connect(self._custom_changed)
        for key, widget in self.setup_boxes.items():
            signal = widget.currentIndexChanged if isinstance(widget, QComboBox) else widget.valueChanged
            signal.connect(lambda *_, key=key: self._setup_changed(key))
        state.model_changed.connect(self._update_model)
        state.setup_changed.connect(self._update_setup)
        state.graph_changed.connect(self._update_summary)
        state.error_changed.connect(self._update_summary)
        self._update_model()
        self._update_setup()

    # -- layout --------------------------------------------------------------------

    def _model_group(self) -> QGroupBox:
        group = QGroupBox("Model")
        form = QFormLayout(group)
        form.addRow(self.model_box)
        form.addRow(self.config_label)
        self._custom_rows = []
        labels = {"layers": "Layers", "d_model": "Model width", "heads": "Heads", "vocab": "Vocabulary",
                  "seq": "Context"}
        for key, box in self.custom.items():
            label = QLabel(labels[key])
            form.addRow(label, box)
            self._custom_rows.append((label, box))
        form.addRow(self.summary)
        return group

    def _setup_widgets(self) -> dict[str, SetupBox]:
        boxes: dict[str, SetupBox] = {}
        for key, choices in (("mode", MODES), ("precision", PRECISIONS), ("optimizer", OPTIMIZERS),
                             ("schedule", RUNNABLE_SCHEDULES)):
            boxes[key] = _combo([(choice, choice) for choice in choices])
        boxes["micro_batch_size"] = _spin(1, 4096, tip="Sequences in one micro-batch")
        boxes["seq_len"] = _spin(1, 1_048_576, 256, "Tokens per sequence")
        boxes["micro_batches"] = _spin(1, 4096, tip="Micro-batches per optimizer step (pipeline depth)")
        boxes["recompute"] = _combo([("auto", "auto"), ("on", True), ("off", False)])
        boxes["recompute"].setToolTip(
            "Activation checkpointing: each block keeps only its input for backward and runs its forward\n"
            "again (a third more work, far less memory). auto: the planner turns it on where that makes\n"
            "the plan fit or faster (docs/design.md, \"Recompute as a decision\").")
        boxes["data_parallel"] = _combo([(str(replicas), replicas) for replicas in DATA_PARALLEL_CHOICES])
        boxes["data_parallel"].setToolTip(
            "Replicas of the pipeline: every stage runs on a group of this many devices, each replica\n"
            "takes micro-batches / replicas of the batch, and each group syncs its gradients at the end\n"
            "of the step. auto: the planner picks the fastest among the divisors of the micro-batches.")
        boxes["tensor_parallel"] = _combo([(str(t), t) for t in (*TENSOR_PARALLEL_SIZES, "auto")])
        boxes["tensor_parallel"].setToolTip(
            "Tensor parallelism: every stage of a replica runs on t devices of one kind in a row, each\n"
            "holding 1/t of a block's weights and work, with two all-reduces per block each way\n"
            "(docs/design.md, \"Tensor parallelism\"). auto: the planner picks the fastest t.")
        boxes["zero"] = _combo([(label, stage) for stage, label in ZERO_LABELS.items()])
        boxes["zero"].setToolTip(
            "How the replicas of a stage share its state (ZeRO / FSDP): 0 every replica holds all of it;\n"
            "1 the optimizer state is split over the group; 2 gradients too; 3 the parameters too,\n"
            "gathered layer by layer when they are used.")
        return boxes

    def _setup_group(self) -> QGroupBox:
        group = QGroupBox("Training setup")
        form = QFormLayout(group)
        labels = {"mode": "Mode", "precision": "Precision", "optimizer": "Optimizer",
                  "micro_batch_size": "Micro-batch size", "seq_len": "Sequence length",
                  "micro_batches": "Micro-batches", "schedule": "Schedule", "data_parallel": "Data parallel",
                  "tensor_parallel": "Tensor parallel", "zero": "ZeRO stage", "recompute": "Recompute"}
        for key, label in labels.items():
            form.addRow(label, self.setup_boxes[key])
        self.setup_note = QLabel()
        self.setup_note.setObjectName("muted")
        self.setup_note.setWordWrap(True)
        self.setup_note.setVisible(False)
        form.addRow(self.setup_note)
        return group

    # -- state -> widgets ------------------------------------------------------------

    def _update_model(self) -> None:
        model = self.state.model
        self._updating = True
        key = f"preset:{model.name}" if model.source == "preset" else (CUSTOM if model.source == "custom" else CHOSEN)
        self._show_chosen(model)
        index = self.model_box.findData(key)
        self.model_box.setCurrentIndex(max(0, index))
        for name, box in self.custom.items():
            box.setValue(getattr(model.custom, name))
        for label, box in self._custom_rows:
            label.setVisible(model.source == "custom")
            box.setVisible(model.source == "custom")
        self.config_label.setText(model.name if model.source == "config" else "")
        self.config_label.setVisible(model.source == "config")
        self._updating = False

    def _show_chosen(self, model: ModelChoice) -> None:
        """Name the local config or model folder in the box ('tiny-llama  (local model folder)');
        the "Local …" items stay to choose another."""
        old = self.model_box.findData(CHOSEN)
        if old >= 0:
            self.model_box.removeItem(old)
        if model.source != "config":
            return
        path = Path(model.name)
        what = "local model folder" if path.is_dir() else "local config"
        name = path.parent.name if path.name == "config.json" else (path.name if path.is_dir() else path.stem)
        at = self.model_box.findData(CUSTOM) - 1  # before the separator above Custom
        self.model_box.insertItem(at, f"{name}  ({what})", CHOSEN)
        self.model_box.setItemData(at, model.name, Qt.ItemDataRole.ToolTipRole)

    def _update_setup(self) -> None:
        setup = self.state.setup
        self._updating = True
        for key, widget in self.setup_boxes.items():
            value = getattr(setup, key)
            if isinstance(widget, QComboBox):
                if widget.findData(value) < 0:  # a replica count off the list, from a project file
                    widget.insertItem(widget.count() - 1, str(value), value)
                widget.setCurrentIndex(widget.findData(value))
            else:
                widget.setValue(int(value))
        self.setup_boxes["optimizer"].setEnabled(setup.mode == "train")
        self.setup_boxes["recompute"].setEnabled(setup.mode == "train")
        self._mark_replica_counts(setup.micro_batches)
        self._mark_zero_stages(setup.data_parallel)
        self._updating = False

    def _mark_replica_counts(self, micro_batches: int) -> None:
        """Grey out the replica counts that do not divide the micro-batches (each replica gets m / d)."""
        _mark_items(self.setup_boxes["data_parallel"],
                    lambda value: None if value == "auto" or micro_batches % int(value) == 0
                    else f"{value} replicas do not divide the {micro_batches} micro-batches")

    def _mark_zero_stages(self, replicas: int | str) -> None:
        """Grey out ZeRO 1-3 for one replica: there is no group to shard over."""
        _mark_items(self.setup_boxes["zero"],
                    lambda value: "ZeRO shards a stage's state over its replicas: with one replica "
                    "there is none to share with" if replicas == 1 and value != 0 else None)

    def _update_summary(self) -> None:
        graph, spec = self.state.graph, self.state.spec
        if graph is None or spec is None:
            if self.state.error:  # the answer was an error: no graph is coming
                self.summary.setText("no layer graph: see the banner")
            return
        blocks = sum(1 for _, data in graph.nodes(data=True) if data.get("is_block"))
        params = graph.graph.get("total_params", 0)
        self.summary.setText(f"{spec.name}: {format_count(params)} parameters, "
                             f"{blocks} blocks, {graph.number_of_nodes()} layers in the chain")

    # -- widgets -> state ------------------------------------------------------------

    def _model_picked(self) -> None:
        if self._updating:
            return
        source, _, name = self.model_box.currentData().partition(":")
        if source == CHOSEN[:-1]:
            return  # the model in use
        if source == "preset":
            self.state.set_model(ModelChoice(source="preset", name=name))
        elif source == "custom":
            self.state.set_model(ModelChoice(source="custom", custom=self.state.model.custom))
        elif source == "folder":
            path = QFileDialog.getExistingDirectory(self, "Hugging Face model folder (config.json + *.safetensors)")
            if path:
                self.choose_config(path)
            else:
                self._update_model()  # cancelled: show the model that is still chosen
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Hugging Face config", "", "Config (*.json)")
            if path:
                self.choose_config(path)
            else:
                self._update_model()

    def choose_config(self, path: str) -> None:
        """A config.json, or a model folder (its config.json is planned; its weights are trained)."""
        self.state.set_model(ModelChoice(source="config", name=path))

    def _custom_changed(self) -> None:
        if self._updating:
            return
        sizes = {key: box.value() for key, box in self.custom.items()}
        self.state.set_model(ModelChoice.of_size(GPTSize(**sizes)))

    def _setup_changed(self, key: str) -> None:
        if self._updating:
            return
        widget = self.setup_boxes[key]
        value: object
        if isinstance(widget, QComboBox):
            value = widget.currentData()
        else:
            value = widget.value()
        # a field named at run time: TrainingSetup checks the value's type when it is built
        changes: dict[str, Any] = {key: value, **self._replicas_for(key, value)}
        try:
            self.state.set_setup(replace(self.state.setup, **changes))
        except InputError:
            self._update_setup()  # not a valid setup: show the one that stands

    def _replicas_for(self, key: str, value: object) -> dict[str, int]:
        """A new micro-batch count that the replica count does not divide takes the largest
        count that does (each replica runs m / d of them), and says so."""
        replicas = self.state.setup.data_parallel
        note = ""
        changes: dict[str, int] = {}
        if key == "micro_batches" and isinstance(replicas, int) and isinstance(value, int) and value % replicas:
            changes["data_parallel"] = max(n for n in range(1, replicas + 1) if value % n == 0)
            note = (f"Data parallel {replicas} → {changes['data_parallel']}: {replicas} replicas "
                    f"do not divide {value} micro-batches.")
        after = changes.get("data_parallel", value if key == "data_parallel" else replicas)
        zero = self.state.setup.zero
        if after == 1 and zero and key != "zero":
            changes["zero"] = 0
            note = " ".join(filter(None, (note, f"ZeRO {zero} → 0: one replica has nothing to shard.")))
        self.setup_note.setText(note)
        self.setup_note.setVisible(bool(note))
        return changes

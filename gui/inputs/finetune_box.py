"""The "Fine-tune" box of the training setup: full, LoRA or QLoRA, and the adapters' settings.

Binds to the state's setup (its `finetune` field, core.planning.finetune): a change
re-plans with the LoRA/QLoRA cost model (docs/design.md, "Fine-tuning").
"""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from core.errors import InputError
from core.planning.front_door import FINETUNE_METHODS, FineTune
from gui.state import AppState

METHOD_LABELS = {"full": "Full (every weight)", "lora": "LoRA (adapters, frozen weights)",
                 "qlora": "QLoRA (adapters, 4-bit weights)"}
assert set(METHOD_LABELS) == set(FINETUNE_METHODS)


class FineTuneBox(QGroupBox):
    """Method, rank, alpha, dropout and target modules; the adapter settings are greyed out for full."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__("Fine-tune", parent)
        self.state = state
        self._updating = False
        self.method = QComboBox()
        for method in FINETUNE_METHODS:
            self.method.addItem(METHOD_LABELS[method], method)
        self.method.setToolTip("Full: every weight trains (Adam keeps 16 bytes a parameter).\n"
                               "LoRA: low-rank adapters train on frozen weights.\n"
                               "QLoRA: adapters on weights stored in 4-bit NF4.")
        self.rank = QSpinBox()
        self.rank.setRange(1, 4096)
        self.rank.setToolTip("Adapter rank r: r x (d_in + d_out) parameters per target module")
        self.alpha = QDoubleSpinBox()
        self.alpha.setRange(0.01, 100_000.0)
        self.alpha.setDecimals(2)
        self.alpha.setToolTip("Adapter scale alpha: the update is scaled by alpha / r")
        self.dropout = QDoubleSpinBox()
        self.dropout.setRange(0.0, 0.99)
        self.dropout.setSingleStep(0.05)
        self.dropout.setDecimals(2)
        self.dropout.setToolTip("Dropout on the adapters' input")
        self.targets = QLineEdit()
        self.targets.setPlaceholderText("attention and MLP projections")
        self.targets.setToolTip("Module names that get adapters, comma-separated (e.g. q_proj,v_proj);\n"
                                "empty: every attention and MLP projection of the model")
        form = QFormLayout(self)
        for label, widget in (("Method", self.method), ("Rank", self.rank), ("Alpha", self.alpha),
                              ("Dropout", self.dropout), ("Targets", self.targets)):
            form.addRow(label, widget)
        self.method.currentIndexChanged.connect(self._changed)
        for box in (self.rank, self.alpha, self.dropout):
            box.valueChanged.connect(self._changed)
        self.targets.editingFinished.connect(self._changed)
        state.setup_changed.connect(self._update)
        self._update()

    def _update(self) -> None:
        finetune = self.state.setup.finetune
        self._updating = True
        self.method.setCurrentIndex(self.method.findData(finetune.method))
        self.rank.setValue(finetune.lora_rank)
        self.alpha.setValue(finetune.lora_alpha)
        self.dropout.setValue(finetune.lora_dropout)
        self.targets.setText(",".join(finetune.lora_targets))
        for widget in (self.rank, self.alpha, self.dropout, self.targets):
            widget.setEnabled(finetune.adapters)
        self._updating = False

    def _changed(self) -> None:
        if self._updating:
            return
        targets = tuple(name.strip() for name in self.targets.text().split(",") if name.strip())
        try:
            finetune = FineTune(method=self.method.currentData(), lora_rank=self.rank.value(),
                                lora_alpha=self.alpha.value(), lora_dropout=self.dropout.value(),
                                lora_targets=targets)
        except InputError:
            self._update()  # not a valid setting: show the one that stands
            return
        if finetune != self.state.setup.finetune:
            self.state.set_setup(replace(self.state.setup, finetune=finetune))

"""napari dock widget "Fine-tune (UnSAMv2)": teach the model your images from your own Labels layers.

Use: for each training image pick the image layer and the Labels layer drawn on it ("+ pair" adds a row; a
stack contributes its labelled slices), say what the labels stand for (granularity, 1.0 = whole objects), name
the new model, press Start. The progress bar shows the step, the loss and the time left; Cancel stops and keeps
nothing. At the end the status line shows the click IoU on held-back objects (never trained on) before and
after, and the model is saved in the model cache under its name, so every widget lists it.

The state and every decision live in :class:`~.finetune_session.FinetuneSession` (Qt-free); this view reads the
controls into it and runs :meth:`FinetuneSession.run` in a background task.
"""
from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton,
                            QSpinBox, QVBoxLayout, QWidget)

from ._common import guard, notify, set_tooltips, start_describe_models, steady_combo
from ._tasks import BackgroundTask, Progress, blocking_with_progress
from .finetune_session import FinetuneSession, training_pairs

__all__ = ["FinetuneWidget"]

_DEFAULT = "default"


class FinetuneWidget(QWidget):
    """The view of a :class:`FinetuneSession` (``session``); ``pair_rows``: the (image, labels) combo rows."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = FinetuneSession()
        self.pair_rows: list[tuple[Any, Any]] = []
        self.pairs_box = QVBoxLayout()
        self.add_pair_button = QPushButton("+ pair")
        self.model_combo = steady_combo(min_chars=12)
        self.model_combo.addItem(_DEFAULT)
        self.granularity = QDoubleSpinBox()
        self.granularity.setRange(0.1, 1.0)
        self.granularity.setSingleStep(0.1)
        self.granularity.setValue(self.session.granularity)
        self.name_edit = QLineEdit(self.session.name)
        self.steps = QSpinBox()
        self.steps.setRange(0, 100_000)
        self.steps.setSpecialValueText("auto")
        self.start_button = QPushButton("Start")
        self.cancel_button = QPushButton("Cancel")
        self.progress_bar = QProgressBar()
        self.status = QLabel("pick an image layer and the Labels layer drawn on it, then Start")
        self.status.setWordWrap(True)
        self.task = BackgroundTask(progress_bar=self.progress_bar, cancel_button=self.cancel_button,
                                   status_label=self.status, context="Fine-tune")
        set_tooltips([
            (self.add_pair_button, "add another training image and its Labels layer"),
            (self.model_combo, "the UnSAMv2 model to start from (default: the best cached one, else the demo)"),
            (self.granularity, "what your labels stand for: 1.0 = whole objects; lower for parts (nuclei inside "
                               "cells, say)"),
            (self.name_edit, "the new model's name: it is saved in the model cache and listed in every widget"),
            (self.steps, "training steps (auto: from the number of labelled objects)"),
            (self.start_button, "train (image encoder frozen: minutes on a CPU) and save the new model"),
            (self.cancel_button, "stop training; nothing is saved"),
        ])
        form = QFormLayout()
        form.addRow("start from", self.model_combo)
        form.addRow("granularity", self.granularity)
        form.addRow("new model name", self.name_edit)
        form.addRow("steps", self.steps)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("training images (image layer → its Labels layer)"))
        layout.addLayout(self.pairs_box)
        layout.addWidget(self.add_pair_button)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.add_pair_button.clicked.connect(lambda: self.add_pair())
        self.start_button.clicked.connect(lambda: guard(self.start, "Fine-tune", self._show_error))
        self.viewer.layers.events.inserted.connect(lambda _e: self._refresh_layers())
        self.viewer.layers.events.removed.connect(lambda _e: self._refresh_layers())
        self.add_pair()
        start_describe_models("unsamv2", self._models_listed)

    # ------------------------------------------------------------------ controls
    @property
    def busy(self) -> bool:
        return self.task.running

    def add_pair(self, image: str | None = None, labels: str | None = None) -> None:
        """Add an (image layer, Labels layer) row, optionally preset to the given layer names."""
        image_combo, labels_combo = steady_combo(), steady_combo()
        row = QHBoxLayout()
        row.addWidget(image_combo)
        row.addWidget(QLabel("→"))
        row.addWidget(labels_combo)
        self.pairs_box.addLayout(row)
        self.pair_rows.append((image_combo, labels_combo))
        self._refresh_layers()
        index = len(self.pair_rows) - 1
        if image is None and index < image_combo.count():
            image_combo.setCurrentIndex(index)  # a new row proposes the next image and Labels layer
        if labels is None and index < labels_combo.count():
            labels_combo.setCurrentIndex(index)
        if image is not None:
            image_combo.setCurrentText(image)
        if labels is not None:
            labels_combo.setCurrentText(labels)

    def _refresh_layers(self) -> None:
        from napari.layers import Image, Labels

        images = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        labels = [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]
        for image_combo, labels_combo in self.pair_rows:
            for combo, names in ((image_combo, images), (labels_combo, labels)):
                current = combo.currentText()
                combo.blockSignals(True)
                combo.clear()
                combo.addItems(names)
                if current in names:
                    combo.setCurrentText(current)
                combo.blockSignals(False)

    def _models_listed(self, described) -> None:
        names, _default, _demo = described
        current = self.model_combo.currentText()
        self.model_combo.clear()
        self.model_combo.addItems([_DEFAULT] + list(names))
        self.model_combo.setCurrentText(current or _DEFAULT)

    def _show_error(self, text: str) -> None:
        self.status.setText(text)

    # ------------------------------------------------------------------ run
    def _pairs(self) -> list:
        pairs, seen = [], set()
        for image_combo, labels_combo in self.pair_rows:
            key = (image_combo.currentText(), labels_combo.currentText())
            if not all(key) or key in seen:
                continue
            seen.add(key)
            image, labels = self.viewer.layers[key[0]], self.viewer.layers[key[1]]
            pairs += training_pairs(image.data, labels.data, rgb=bool(getattr(image, "rgb", False)))
        if not pairs:
            raise ValueError("no training pair: pick an image layer and the Labels layer drawn on it")
        return pairs

    def start(self) -> None:
        """Read the controls and train in the background (what Start does)."""
        if self.task.running:
            raise ValueError("fine-tuning is already running: wait for it or press Cancel")
        session = self.session
        session.granularity = float(self.granularity.value())
        session.name = self.name_edit.text().strip()
        session.steps = self.steps.value() or None
        model = self.model_combo.currentText()
        session.model = None if model in ("", _DEFAULT) else model
        session.output_path()  # a bad name fails now, before any work
        pairs = self._pairs()

        def job(is_cancelled):
            yield Progress(0, 0, session.progress_text())
            steps = blocking_with_progress(lambda _progress, cancel: session.run(pairs, cancel), is_cancelled, 0.25)
            while True:
                try:
                    next(steps)
                except StopIteration as stop:
                    return stop.value
                step, total = session.progress[:2]
                yield Progress(step, total, session.progress_text())

        self.start_button.setEnabled(False)
        self.task.start(job, on_done=self._done, on_error=self._failed, on_finished=self._finished,
                        message=session.progress_text())

    def _done(self, model) -> None:
        if model is None:
            self.status.setText("cancelled: nothing was saved")
            return
        self.status.setText(self.session.summary())
        notify("info", f"fine-tuned model '{self.session.name}' saved: {self.session.summary()}")

    def _failed(self, exc: BaseException) -> None:
        self.session.error = str(exc)
        self.status.setText(f"fine-tuning failed: {exc}")
        notify("error", f"Fine-tune: {exc}")

    def _finished(self) -> None:
        self.start_button.setEnabled(True)

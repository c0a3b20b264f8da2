"""napari dock widget: label a few slices of a series, segment the same classes in all the others (SANSA).

Use: pick the image layer (a stack, one image per slice), the Labels layer holding your references (every
slice with labels is a reference unless you list slices), press Run. Each label id is its own class. With a
Points layer instead, the slices with points are references of one class (points = positive clicks).
The result goes to a NEW Labels layer; your reference layer is never written to.

From the napari console::

    dock, widget = viewer.window.add_plugin_dock_widget("napari-granseg", "Few-shot series (SANSA)")
    widget.set_model(gs.load_model("sansa-universal"))   # optional; default: a cached real model, else the demo
    widget.run()                                         # same as pressing Run (returns the napari worker)
    widget.segmenter                                     # the FewShotSegmenter of the last run (napari-free)
"""
from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import (QComboBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton,
                            QVBoxLayout, QWidget)

__all__ = ["FewShotWidget", "parse_slices"]

_NONE = "(none)"


def parse_slices(text: str, n: int) -> list[int]:
    """'0, 3, 5-7' -> [0, 3, 5, 6, 7]; negative indices count from the end. Raises ValueError with the fix."""
    out: list[int] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else part[1:].split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError(f"cannot read slice list {text!r}: use numbers and ranges like '0, 3, 5-7'.") from None
    out = [i + n if i < 0 else i for i in out]
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ValueError(f"slices {bad} are outside the series (0..{n - 1}).")
    return sorted(set(out))


class FewShotWidget(QWidget):
    """Few-shot series segmentation (see the module docstring). ``segmenter``: the engine of the last run."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.model = None
        self.segmenter = None
        self.worker = None
        self.output_layer = None
        self._cancel = False

        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.points_combo = QComboBox()
        self.slices_edit = QLineEdit()
        self.slices_edit.setPlaceholderText("all slices with labels (or e.g. 0, 5, 9-10)")
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("zoo name or checkpoint path (empty: best cached, else demo)")
        self.size_combo = QComboBox()
        self.size_combo.addItems(["640", "518", "model size"])
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image (series)", self.image_combo)
        form.addRow("Reference labels", self.labels_combo)
        form.addRow("or reference points", self.points_combo)
        form.addRow("Reference slices", self.slices_edit)
        form.addRow("Model", self.model_edit)
        form.addRow("Pre-resize", self.size_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------------------------------- layers
    def _refresh_layers(self, event: Any = None) -> None:
        from napari.layers import Image, Labels, Points

        for combo, kind, none in ((self.image_combo, Image, False), (self.labels_combo, Labels, True),
                                  (self.points_combo, Points, True)):
            current = combo.currentText()
            names = [layer.name for layer in self.viewer.layers if isinstance(layer, kind)
                     and layer is not self.output_layer]
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(([_NONE] if none else []) + names)
            if current in names:
                combo.setCurrentText(current)
            elif none and names:
                combo.setCurrentIndex(1)
            combo.blockSignals(False)
        if self.points_combo.count() > 1 and self.labels_combo.currentText() != _NONE:
            self.points_combo.setCurrentText(_NONE)  # labels take precedence; pick points explicitly

    def _layer(self, combo: QComboBox):
        name = combo.currentText()
        return None if name in ("", _NONE) or name not in self.viewer.layers else self.viewer.layers[name]

    # -------------------------------------------------------------------------------------------- model
    def set_model(self, model: Any) -> None:
        """Use this model (a LoadedModel of kind 'sansa' or a SansaModel) instead of the Model field."""
        self.model = model

    def _get_model(self):
        from .. import zoo

        text = self.model_edit.text().strip()
        if self.model is not None and (not text or text == getattr(self.model, "name", None)):
            return self.model
        name = text or zoo.default_model_name("sansa")
        self.model = zoo.load_model(name, kind="sansa")
        if getattr(self.model, "is_demo", False):
            self._notify_info("Using the DEMO few-shot model (trained on synthetic shapes only). For real data "
                              "download one: napari_granseg.load_model('sansa-universal').")
        return self.model

    # ------------------------------------------------------------------------------------------ running
    def _collect(self) -> dict:
        """Read and validate the inputs; raise ValueError with the fix."""
        image_layer = self._layer(self.image_combo)
        if image_layer is None:
            raise ValueError("no image layer: open a series (a 3D stack) and pick it as Image.")
        data = np.asarray(image_layer.data)
        ndim = data.ndim - (1 if getattr(image_layer, "rgb", False) else 0)
        if ndim != 3:
            raise ValueError(f"the image layer {image_layer.name!r} has {ndim} spatial dimensions; few-shot needs a "
                             f"series (slices, rows, cols): stack your images, e.g. np.stack(list_of_images).")
        n = data.shape[0]
        labels_layer, points_layer = self._layer(self.labels_combo), self._layer(self.points_combo)
        chosen = parse_slices(self.slices_edit.text(), n) if self.slices_edit.text().strip() else None
        if labels_layer is not None:
            labels = np.asarray(labels_layer.data)
            if labels.shape != data.shape[:3]:
                raise ValueError(f"labels layer {labels_layer.name!r} has shape {labels.shape}, the image "
                                 f"{data.shape[:3]}: add a Labels layer over the image (Layers > New Labels).")
            labelled = [i for i in range(n) if labels[i].any()]
            refs = chosen if chosen is not None else labelled
            empty = [i for i in refs if i not in labelled]
            if empty:
                raise ValueError(f"reference slices {empty} have no labels: paint the class on them or remove "
                                 f"them from 'Reference slices'.")
            if not refs:
                raise ValueError("no labels on any slice: paint the class on one or a few slices of the "
                                 "reference Labels layer, then Run.")
            return {"image": data, "refs": refs, "labels": labels, "points": None, "source": labels_layer.name}
        if points_layer is not None:
            pts = np.asarray(points_layer.data)
            if pts.ndim != 2 or pts.shape[1] < 3 or len(pts) == 0:
                raise ValueError("the points layer needs points on the slices (3D points: slice, row, col).")
            by_slice: dict[int, list[list[float]]] = {}
            for z, r, c in pts[:, -3:]:
                by_slice.setdefault(int(round(z)), []).append([float(c), float(r)])
            refs = sorted(i for i in by_slice if 0 <= i < n and (chosen is None or i in chosen))
            if not refs:
                raise ValueError("no points on any slice of the series (or none on the chosen slices).")
            return {"image": data, "refs": refs, "labels": None, "points": by_slice, "source": points_layer.name}
        raise ValueError("pick a reference Labels layer (paint the class on a few slices) or a Points layer.")

    def run(self):
        """Start segmenting (in a napari thread worker). Returns the worker, or None after an error."""
        from napari.qt.threading import thread_worker

        if self.worker is not None:
            self._notify_error("a few-shot run is in progress: wait, or press Cancel.")
            return None
        try:
            job = self._collect()
            model = self._get_model()
            from ..engine.fewshot import FewShotSegmenter
            from ..engine.normalize import intensity_range

            size = self.size_combo.currentText()
            image = job["image"]
            lo_hi = None if image.dtype == np.uint8 else intensity_range(image)
            self.segmenter = FewShotSegmenter(model, image_size=None if size == "model size" else int(size),
                                              intensity_range=lo_hi)
        except Exception as err:  # noqa: BLE001 - shown to the user with its fix
            self._notify_error(str(err))
            return None
        refs = job["refs"]
        targets = [i for i in range(image.shape[0]) if i not in refs]
        out = np.zeros(image.shape[:3], np.int32)
        if job["labels"] is not None:
            out[refs] = job["labels"][refs]
        else:
            out[refs] = 0
        self.output_layer = self.viewer.add_labels(out, name=f"{job['source']} few-shot")
        self._cancel = False
        segmenter = self.segmenter

        @thread_worker
        def work():
            if job["labels"] is not None:
                gen = segmenter.iter_segment_classes((image[i] for i in targets), [job["labels"][i] for i in refs],
                                                     [image[i] for i in refs], cancel=lambda: self._cancel)
            else:
                segmenter.clear_references()
                for i in refs:
                    segmenter.add_reference(image[i], points=job["points"][i])
                gen = (r.mask.astype(np.int32) for r in segmenter.segment_many((image[i] for i in targets),
                                                                            cancel=lambda: self._cancel))
            for n, (i, lab) in enumerate(zip(targets, gen)):
                yield n + 1, i, lab

        self.progress.setRange(0, max(1, len(targets)))
        self.progress.setValue(0)
        self.status.setText(f"{len(refs)} reference slice(s) {refs}, {len(targets)} target(s)...")
        worker = work()
        worker.yielded.connect(self._on_yield)
        worker.errored.connect(lambda err: self._notify_error(f"few-shot segmentation failed: {err}"))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        worker.start()
        return worker

    def _on_yield(self, item) -> None:
        n, i, lab = item
        layer = self.output_layer
        if layer is not None:
            layer.data[i] = lab
            layer.refresh()
        self.progress.setValue(n)

    def _on_finished(self) -> None:
        done = self.progress.value()
        self.status.setText(("cancelled after " if self._cancel else "done: ") + f"{done} target slice(s) "
                            f"segmented into {self.output_layer.name if self.output_layer is not None else '?'}"
                            + (" [DEMO model]" if getattr(self.model, "is_demo", False) else ""))
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def cancel(self) -> None:
        """Stop after the current slice (results so far stay in the output layer)."""
        self._cancel = True
        if self.worker is not None:
            self.worker.quit()

    @property
    def busy(self) -> bool:
        return self.worker is not None

    # ----------------------------------------------------------------------------------- notifications
    @staticmethod
    def _notify_error(message: str) -> None:
        from napari.utils.notifications import show_error

        show_error(message)

    @staticmethod
    def _notify_info(message: str) -> None:
        from napari.utils.notifications import show_info

        show_info(message)

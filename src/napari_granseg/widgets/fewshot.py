"""napari dock widget: label a few slices of a series, segment the same classes in all the others (SANSA).

Use: pick the image layer (a stack, one image per slice), the Labels layer holding your references (every
slice with labels is a reference unless you list slices), press Run. Each label id is its own class. With a
Points or Shapes layer instead, the slices with prompts are references of one class: points are positive
clicks, a rectangle is a box, paths/lines/polygons are scribbles (their outline sampled to points).
The result goes to a NEW Labels layer; your reference layer is never written to.

The GUI thread only reads the controls and the layers' shapes; reading the stack, loading the model and
segmenting run in the background task, and each finished slice is written into the output layer.

From the napari console::

    dock, widget = viewer.window.add_plugin_dock_widget("napari-granseg", "Few-shot series (SANSA)")
    widget.set_model(gs.load_model("sansa-universal"))   # optional; default: a cached real model, else the demo
    widget.run()                                         # same as pressing Run; widget.busy is False when done
    widget.segmenter                                     # the FewShotSegmenter of the last run (napari-free)
"""
from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import (QComboBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton,
                            QVBoxLayout, QWidget)

from ._napari_warmup import start_warmup
from ._common import (PRECISIONS, PRECISION_TIP, guard, import_engines, set_tooltips, show_model_badge,
                      start_describe_models, steady_combo, unique_layer_name)
from ._layer_pixels import CHANNELS_TIP, LayerPixels, level0, new_labels_array, parse_channels
from ._compute import ComputeSetting, make_fewshot
from ._fewshot_refs import SCRIBBLE_POINTS, prompts_by_slice
from ._tasks import BackgroundTask, Progress
from .recovery_hooks import RestoreOffer, record_write

__all__ = ["FewShotWidget", "parse_slices", "prompts_by_slice", "SCRIBBLE_POINTS"]

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
        self.setWindowTitle("Few-shot series")
        self.viewer = napari_viewer
        self.model = None
        self.segmenter = None
        self.output_layer = None
        self.last_error = ""
        self._default_model: tuple[str, bool] | None = None

        self.model_badge = QLabel("")
        self.model_badge.setWordWrap(True)
        self.image_combo = steady_combo()
        self.labels_combo = steady_combo()
        self.points_combo = steady_combo()
        self.slices_edit = QLineEdit()
        self.slices_edit.setPlaceholderText("all slices with labels (or e.g. 0, 5, 9-10)")
        self.model_edit = QLineEdit()
        self.compute = ComputeSetting(on_error=lambda message: self.status.setText(message))
        self.model_edit.setPlaceholderText("zoo name or checkpoint path (empty: best cached, else demo)")
        self.size_combo = QComboBox()
        self.size_combo.addItems(["640", "518", "model size"])
        self.precision = QComboBox()
        self.precision.addItems(list(PRECISIONS))
        self.channels = QLineEdit()
        self.channels.setPlaceholderText("none (gray or RGB)")
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        set_tooltips([
            (self.image_combo, "the series to segment: a stack (slices, rows, cols), z-stack or time series"),
            (self.labels_combo, "Labels layer over the series holding your references: paint the class on a "
                                "few slices; each label id is its own class"),
            (self.points_combo, "or a Points/Shapes layer: on each reference slice, points = positive clicks, a "
                                "rectangle = a box, a path = a scribble (one class). Used when no labels "
                                "layer is picked"),
            (self.slices_edit, "which slices are references (e.g. 0, 5, 9-10); empty = every slice with labels "
                               "or prompts"),
            (self.model_edit, "SANSA model: a zoo name (sansa-universal) or a checkpoint path; empty = the best "
                              "cached model, else the bundled DEMO model"),
            (self.size_combo, "square pre-resize before the model: 640 for natural/microscopy images, 518 for "
                              "FSS-1000/medical; 'model size' resizes straight to the model's input"),
            (self.precision, PRECISION_TIP),
            (self.channels, CHANNELS_TIP + "; for a series of multi-channel images (Z, C, H, W) or (Z, H, W, C)"),
            (self.run_button, "segment the references' classes in every other slice into a NEW Labels layer"),
            (self.cancel_button, "stop after the current slice (slices done so far stay in the output layer)"),
            (self.progress, "target slices segmented"),
        ])

        form = QFormLayout()
        form.addRow("Image (series)", self.image_combo)
        form.addRow("Reference labels", self.labels_combo)
        form.addRow("or reference prompts", self.points_combo)
        form.addRow("Reference slices", self.slices_edit)
        form.addRow("Model", self.model_edit)
        form.addRow("Compute", self.compute.row)
        form.addRow("Pre-resize", self.size_combo)
        form.addRow("Precision", self.precision)
        form.addRow("Channels", self.channels)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.model_badge)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(RestoreOffer(napari_viewer, self.status))
        layout.addStretch(1)

        self.task = BackgroundTask(self.progress, self.cancel_button, self.status, context="Few-shot")
        self.task.on_any_finished(self._finished)
        self.run_button.clicked.connect(lambda: guard(self.run, "Few-shot", self._remember_error))
        self.model_edit.editingFinished.connect(self._show_model_choice)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        self._show_model_choice()
        # napari's first-layer imports in a worker (the result is a Labels layer), then the zoo (imports torch)
        start_warmup(lambda: start_describe_models("sansa", self._models_described))

    # ------------------------------------------------------------------------------------------- layers
    def _refresh_layers(self, event: Any = None) -> None:
        from napari.layers import Image, Labels, Points, Shapes

        out_name = self.output_layer.name if self.output_layer is not None else None
        for combo, kinds, none in ((self.image_combo, (Image,), False), (self.labels_combo, (Labels,), True),
                                   (self.points_combo, (Points, Shapes), True)):
            current = combo.currentText()
            names = [layer.name for layer in self.viewer.layers if isinstance(layer, kinds)
                     and layer.name != out_name]
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(([_NONE] if none else []) + names)
            if current in names:
                combo.setCurrentText(current)
            elif none and names:
                combo.setCurrentIndex(1)
            combo.blockSignals(False)
        if self.points_combo.count() > 1 and self.labels_combo.currentText() != _NONE:
            self.points_combo.setCurrentText(_NONE)  # labels take precedence; pick prompts explicitly

    def _layer(self, combo: QComboBox):
        name = combo.currentText()
        return None if name in ("", _NONE) or name not in self.viewer.layers else self.viewer.layers[name]

    # -------------------------------------------------------------------------------------------- model
    def set_model(self, model: Any) -> None:
        """Use this model (a LoadedModel of kind 'sansa' or a SansaModel) instead of the Model field."""
        self.model = model
        self._show_model_choice()

    def _models_described(self, described) -> None:
        self._default_model = (described[1], described[2])
        self._show_model_choice()

    def _show_model_choice(self) -> None:
        """The badge says which model Run will use; DEMO (orange) whenever that is a demo model."""
        text = self.model_edit.text().strip()
        if self.model is not None and (not text or text == getattr(self.model, "name", None)):
            show_model_badge(self.model_badge, self.model, real_model="sansa-universal")
        elif text:
            show_model_badge(self.model_badge, name=text, demo=text.endswith("-demo"), real_model="sansa-universal")
        elif self._default_model is not None:
            show_model_badge(self.model_badge, name=self._default_model[0], demo=self._default_model[1],
                             real_model="sansa-universal")
        else:
            self.model_badge.setText("model: default (finding the best available…)")

    def _get_model(self, text: str):
        """The model to run (worker thread): the given one, or the Model field's, or the default."""
        from .. import zoo

        if self.model is not None and (not text or text == getattr(self.model, "name", None)):
            return self.model
        return zoo.load_model(text or zoo.default_model_name("sansa"), kind="sansa")

    # ------------------------------------------------------------------------------------------ running
    def _collect(self) -> dict:
        """Read the controls and the layers' shapes (GUI thread, cheap); raise ValueError with the fix."""
        image_layer = self._layer(self.image_combo)
        if image_layer is None:
            raise ValueError("no image layer: open a series (a 3D stack) and pick it as Image.")
        # shapes only here; the worker reads one slice at a time (level 0 of a multiscale layer)
        pixels = LayerPixels(level0(image_layer), bool(getattr(image_layer, "rgb", False)),
                             parse_channels(self.channels.text()), image_layer.name)
        if not pixels.is_stack:
            raise ValueError(f"the image layer {image_layer.name!r} is a single 2D image; few-shot needs a "
                             f"series (slices, rows, cols): stack your images, e.g. np.stack(list_of_images).")
        shape = pixels.labels_shape
        n = shape[0]
        labels_layer, prompts_layer = self._layer(self.labels_combo), self._layer(self.points_combo)
        chosen = parse_slices(self.slices_edit.text(), n) if self.slices_edit.text().strip() else None
        job = {"pixels": pixels, "n": n, "chosen": chosen, "labels": None, "prompts": None,
               "size": self.size_combo.currentText(), "precision": self.precision.currentText(),
               "model_text": self.model_edit.text().strip(), "layer_name": image_layer.name,
               "session": self.compute.session}
        if labels_layer is not None:
            if tuple(labels_layer.data.shape) != shape[:3]:
                raise ValueError(f"labels layer {labels_layer.name!r} has shape {tuple(labels_layer.data.shape)}, "
                                 f"the image {shape[:3]}: add a Labels layer over the image (Layers > New Labels).")
            return {**job, "labels": labels_layer.data, "source": labels_layer.name}
        if prompts_layer is not None:
            by_slice = prompts_by_slice(prompts_layer)
            refs = sorted(i for i in by_slice if 0 <= i < n and (chosen is None or i in chosen))
            if not refs:
                raise ValueError("no prompts on any slice of the series (or none on the chosen slices).")
            return {**job, "prompts": {i: by_slice[i] for i in refs}, "source": prompts_layer.name}
        raise ValueError("pick a reference Labels layer (paint the class on a few slices) or a Points/Shapes layer.")

    def run(self):
        """Start segmenting in the background (same as pressing Run); returns the napari worker.

        Input mistakes found on the GUI thread raise ValueError; the others (empty references, a bad model
        name) are shown as notifications when the task reaches them.
        """
        if self.busy:
            raise RuntimeError("a few-shot run is in progress: wait, or press Cancel.")
        job = self._collect()
        self._image_name = job["layer_name"]  # the image the output is recorded over (crash recovery)
        self.last_error = ""
        self.run_button.setEnabled(False)
        self.output_layer = None

        def work(is_cancelled):
            yield Progress(0, 0, "loading the model…")
            import_engines("napari_granseg.engine.fewshot")

            session = job["session"]
            if session is None:
                model = self._get_model(job["model_text"])
                yield ("model", model)
            else:  # the model loads on the GPU worker, by name (docs/remote.md)
                model = job["model_text"] or getattr(self.model, "name", None) or "sansa-universal"
                yield ("remote-model", model, session.address)
            yield Progress(0, 0, "reading the references…")
            pixels: LayerPixels = job["pixels"]
            refs, ref_labels = self._references(job)
            size = job["size"]
            # one range for the whole series (read from at most 16 slices), every slice scaled alike
            segmenter = make_fewshot(model, session, image_size=None if size == "model size" else int(size),
                                     precision=job["precision"], intensity_range=pixels.intensity())
            self.segmenter = segmenter
            targets = [i for i in range(pixels.n) if i not in refs]
            out, store = new_labels_array(pixels.labels_shape, f"{job['layer_name']} few-shot")
            if ref_labels is not None:
                for i, lab in zip(refs, ref_labels):
                    out[i] = lab
            yield ("output", out, refs, targets, store)
            target_images = (pixels[i] for i in targets)  # read one slice at a time
            if ref_labels is not None and session is not None:  # one worker call per slice
                ref_images = [pixels[i] for i in refs]
                gen = (segmenter.segment_classes([t], ref_labels, ref_images, cancel=is_cancelled)[0]
                       for t in target_images)
            elif ref_labels is not None:
                gen = segmenter.iter_segment_classes(target_images, ref_labels, [pixels[i] for i in refs],
                                                     cancel=is_cancelled)
            else:
                segmenter.clear_references()
                for i in refs:
                    segmenter.add_reference(pixels[i], **job["prompts"][i])
                gen = (r.mask.astype(np.int32) for r in segmenter.segment_many(target_images, cancel=is_cancelled))
            for n, (i, lab) in enumerate(zip(targets, gen)):
                out[i] = lab  # written here, in the worker (a zarr store: one chunk per slice)
                yield ("slice", i)
                yield Progress(n + 1, len(targets), f"segmented slice {i} ({n + 1}/{len(targets)})")
            return len(targets)

        self._done = 0
        return self.task.start(work, on_yield=self._on_yield, on_error=self._on_error, message="starting…")

    @staticmethod
    def _references(job: dict) -> tuple[list[int], list[np.ndarray] | None]:
        """(reference slices, their label images or None for prompts); worker thread: reads the labels one
        slice at a time. Raises ValueError with the fix."""
        if job["labels"] is None:
            return sorted(job["prompts"]), None
        labels = job["labels"]
        chosen = job["chosen"]
        read = {}
        for i in (chosen if chosen is not None else range(job["n"])):
            lab = np.asarray(labels[i])
            if lab.any():
                read[i] = lab
        refs = chosen if chosen is not None else sorted(read)
        empty = [i for i in refs if i not in read]
        if empty:
            raise ValueError(f"reference slices {empty} have no labels: paint the class on them or remove "
                             f"them from 'Reference slices'.")
        if not refs:
            raise ValueError("no labels on any slice: paint the class on one or a few slices of the "
                             "reference Labels layer, then Run.")
        return refs, [read[i] for i in refs]

    def _on_yield(self, item) -> None:
        kind = item[0]
        if kind == "model":
            show_model_badge(self.model_badge, item[1], real_model="sansa-universal")
        elif kind == "remote-model":
            show_model_badge(self.model_badge, name=f"{item[1]} on {item[2]}", demo=item[1].endswith("-demo"),
                             real_model="sansa-universal")
        elif kind == "output":
            _, out, refs, targets, store = item
            source = self._layer(self.labels_combo) or self._layer(self.points_combo)
            base = f"{source.name if source is not None else 'series'} few-shot"
            self.output_layer = self.viewer.add_labels(out, name=unique_layer_name(self.viewer, base),
                                                       metadata={"store": str(store)} if store else {})
            self.progress.setRange(0, max(1, len(targets)))
            record_write(self._image_name, self.output_layer, (), None, "few-shot references", self.viewer)
            self.status.setText(f"{len(refs)} reference slice(s) {refs}, {len(targets)} target(s)…")
        elif kind == "slice":
            layer = self.output_layer
            if layer is not None:
                layer.refresh()  # the worker wrote the slice into the layer's array
                record_write(self._image_name, layer, (item[1],), None, "few-shot", self.viewer)
            self._done += 1

    def _on_error(self, exc: BaseException) -> None:
        from ._common import notify_error

        self.last_error = notify_error(exc, "Few-shot")

    def _remember_error(self, text: str) -> None:
        self.last_error = text

    def _finished(self) -> None:
        self.run_button.setEnabled(True)
        if self.output_layer is None:
            return
        cancelled = self.task.is_cancelled()
        store = self.output_layer.metadata.get("store")
        self.status.setText(("cancelled after " if cancelled else "done: ") + f"{self._done} target slice(s) "
                            f"segmented into {self.output_layer.name}"
                            + (f" (large series: labels written to {store}; save the layer to keep them, then "
                               f"delete that folder)" if store else "")
                            + (" [DEMO model]" if "DEMO" in self.model_badge.text() else ""))

    def cancel(self) -> None:
        """Stop after the current slice (results so far stay in the output layer)."""
        self.task.cancel()

    @property
    def busy(self) -> bool:
        return self.task.running

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

from ._common import (PRECISION_TIP, PRECISIONS, guard, import_engines, set_tooltips, show_model_badge,
                      start_describe_models, unique_layer_name)
from ._tasks import BackgroundTask, Progress

__all__ = ["FewShotWidget", "parse_slices", "prompts_by_slice"]

#: points sampled along each scribble (path, line or polygon outline) used as a reference prompt
SCRIBBLE_POINTS = 12

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


def _sample_path(vertices: np.ndarray, n: int, closed: bool) -> np.ndarray:
    """``n`` points evenly spaced along a polyline of (x, y) vertices (its outline when ``closed``)."""
    pts = np.concatenate([vertices, vertices[:1]]) if closed else vertices
    if len(pts) == 1:
        return pts
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    at = np.concatenate([[0.0], np.cumsum(seg)])
    if at[-1] == 0:
        return pts[:1]
    t = np.linspace(0.0, at[-1], n, endpoint=not closed)
    return np.stack([np.interp(t, at, pts[:, 0]), np.interp(t, at, pts[:, 1])], axis=1)


def prompts_by_slice(layer: Any) -> dict[int, dict]:
    """Reference prompts per slice from a Points or Shapes layer: {slice: {"points"|"scribble"|"box": ...}}.

    Coordinates are (x, y) pixels as the engine takes them. Points are positive clicks; a rectangle is a box
    (one per slice); a path, line or polygon is a scribble (:data:`SCRIBBLE_POINTS` points along it).
    """
    from napari.layers import Points, Shapes

    out: dict[int, dict] = {}
    if isinstance(layer, Points):
        pts = np.asarray(layer.data)
        if pts.ndim != 2 or pts.shape[1] < 3 or len(pts) == 0:
            raise ValueError(f"the points layer {layer.name!r} needs points on the slices (3D points: slice, "
                             f"row, col): add points while viewing a slice of the series.")
        for z, r, c in pts[:, -3:]:
            out.setdefault(int(round(z)), {}).setdefault("points", []).append([float(c), float(r)])
        return out
    if isinstance(layer, Shapes):
        for verts, kind in zip(layer.data, layer.shape_type):
            verts = np.asarray(verts)
            if verts.shape[1] < 3:
                raise ValueError(f"shapes layer {layer.name!r} is 2D: draw the shapes while viewing a slice of "
                                 f"the series (3D shapes: slice, row, col).")
            z = int(round(float(verts[0, -3])))
            xy = verts[:, [-1, -2]].astype(float)
            entry = out.setdefault(z, {})
            if kind == "rectangle":
                if "box" in entry:
                    raise ValueError(f"slice {z} of {layer.name!r} has two rectangles: one box per reference "
                                     f"slice (use points or scribbles for more objects).")
                entry["box"] = [xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()]
            else:
                closed = kind in ("polygon", "ellipse")
                entry.setdefault("scribble", []).extend(_sample_path(xy, SCRIBBLE_POINTS, closed).tolist())
        if not out:
            raise ValueError(f"the shapes layer {layer.name!r} is empty: draw a rectangle or a path on a "
                             f"reference slice.")
        return out
    raise ValueError(f"{layer.name!r} is not a Points or Shapes layer")


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
        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.points_combo = QComboBox()
        self.slices_edit = QLineEdit()
        self.slices_edit.setPlaceholderText("all slices with labels (or e.g. 0, 5, 9-10)")
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("zoo name or checkpoint path (empty: best cached, else demo)")
        self.size_combo = QComboBox()
        self.size_combo.addItems(["640", "518", "model size"])
        self.precision = QComboBox()
        self.precision.addItems(list(PRECISIONS))
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
        form.addRow("Pre-resize", self.size_combo)
        form.addRow("Precision", self.precision)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.model_badge)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.task = BackgroundTask(self.progress, self.cancel_button, self.status, context="Few-shot")
        self.task.on_any_finished(self._finished)
        self.run_button.clicked.connect(lambda: guard(self.run, "Few-shot", self._remember_error))
        self.model_edit.editingFinished.connect(self._show_model_choice)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        self._show_model_choice()
        start_describe_models("sansa", self._models_described)

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
        if getattr(image_layer, "multiscale", False):
            raise ValueError(f"layer {image_layer.name!r} is multiscale: pick one scale level as its own layer.")
        shape = tuple(image_layer.data.shape)
        ndim = len(shape) - (1 if getattr(image_layer, "rgb", False) else 0)
        if ndim != 3:
            raise ValueError(f"the image layer {image_layer.name!r} has {ndim} spatial dimensions; few-shot needs a "
                             f"series (slices, rows, cols): stack your images, e.g. np.stack(list_of_images).")
        n = shape[0]
        labels_layer, prompts_layer = self._layer(self.labels_combo), self._layer(self.points_combo)
        chosen = parse_slices(self.slices_edit.text(), n) if self.slices_edit.text().strip() else None
        job = {"image": image_layer.data, "n": n, "chosen": chosen, "labels": None, "prompts": None,
               "size": self.size_combo.currentText(), "precision": self.precision.currentText(),
               "model_text": self.model_edit.text().strip()}
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
        self.last_error = ""
        self.run_button.setEnabled(False)
        self.output_layer = None

        def work(is_cancelled):
            yield Progress(0, 0, "loading the model…")
            import_engines("napari_granseg.engine.fewshot")
            from ..engine.fewshot import FewShotSegmenter
            from ..engine.normalize import intensity_range

            model = self._get_model(job["model_text"])
            yield ("model", model)
            yield Progress(0, 0, "reading the series…")
            image = np.asarray(job["image"])
            refs = self._references(job, image)
            size = job["size"]
            lo_hi = intensity_range(image)  # one range for the whole series, every slice scaled alike
            kwargs = {"image_size": None if size == "model size" else int(size), "intensity_range": lo_hi}
            if job["precision"] != "auto":
                kwargs["precision"] = job["precision"]
            try:
                segmenter = FewShotSegmenter(model, **kwargs)
            except TypeError:
                if "precision" not in kwargs:
                    raise
                raise ValueError(f"precision {job['precision']!r} is not supported by this version of the "
                                 f"engine: choose 'auto'") from None
            self.segmenter = segmenter
            targets = [i for i in range(image.shape[0]) if i not in refs]
            out = np.zeros(image.shape[:3], np.int32)
            if job["labels"] is not None:
                out[refs] = job["labels"][refs]
            yield ("output", out, refs, targets)
            if job["labels"] is not None:
                gen = segmenter.iter_segment_classes((image[i] for i in targets), [job["labels"][i] for i in refs],
                                                     [image[i] for i in refs], cancel=is_cancelled)
            else:
                segmenter.clear_references()
                for i in refs:
                    segmenter.add_reference(image[i], **job["prompts"][i])
                gen = (r.mask.astype(np.int32) for r in segmenter.segment_many((image[i] for i in targets),
                                                                            cancel=is_cancelled))
            for n, (i, lab) in enumerate(zip(targets, gen)):
                yield ("slice", i, lab)
                yield Progress(n + 1, len(targets), f"segmented slice {i} ({n + 1}/{len(targets)})")
            return len(targets)

        self._done = 0
        return self.task.start(work, on_yield=self._on_yield, on_error=self._on_error, message="starting…")

    @staticmethod
    def _references(job: dict, image: np.ndarray) -> list[int]:
        """The reference slices (worker thread: reads the labels); raises ValueError with the fix."""
        if job["labels"] is None:
            return sorted(job["prompts"])
        labels = np.asarray(job["labels"])
        job["labels"] = labels
        labelled = [i for i in range(job["n"]) if labels[i].any()]
        refs = job["chosen"] if job["chosen"] is not None else labelled
        empty = [i for i in refs if i not in labelled]
        if empty:
            raise ValueError(f"reference slices {empty} have no labels: paint the class on them or remove "
                             f"them from 'Reference slices'.")
        if not refs:
            raise ValueError("no labels on any slice: paint the class on one or a few slices of the "
                             "reference Labels layer, then Run.")
        return refs

    def _on_yield(self, item) -> None:
        kind = item[0]
        if kind == "model":
            show_model_badge(self.model_badge, item[1], real_model="sansa-universal")
        elif kind == "output":
            _, out, refs, targets = item
            source = self._layer(self.labels_combo) or self._layer(self.points_combo)
            base = f"{source.name if source is not None else 'series'} few-shot"
            self.output_layer = self.viewer.add_labels(out, name=unique_layer_name(self.viewer, base))
            self.progress.setRange(0, max(1, len(targets)))
            self.status.setText(f"{len(refs)} reference slice(s) {refs}, {len(targets)} target(s)…")
        elif kind == "slice":
            _, i, lab = item
            layer = self.output_layer
            if layer is not None:
                layer.data[i] = lab
                layer.refresh()
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
        self.status.setText(("cancelled after " if cancelled else "done: ") + f"{self._done} target slice(s) "
                            f"segmented into {self.output_layer.name}"
                            + (" [DEMO model]" if getattr(self.segmenter and self.segmenter.loaded, "is_demo",
                                                          False) else ""))

    def cancel(self) -> None:
        """Stop after the current slice (results so far stay in the output layer)."""
        self.task.cancel()

    @property
    def busy(self) -> bool:
        return self.task.running

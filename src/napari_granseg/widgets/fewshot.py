"""napari dock widget: label a few slices of a series, segment the same classes in all the others (SANSA).

Use: pick the image layer (a stack, one image per slice), the Labels layer holding your references (every
slice with labels is a reference unless you list slices), press Run. Each label id is its own class. With a
Points or Shapes layer instead, the slices with prompts are references of one class: points are positive
clicks, a rectangle is a box, paths/lines/polygons are scribbles (their outline sampled to points).
The result goes to a NEW Labels layer; your reference layer is never written to.

The widget only reads its controls and the layers' shapes; reading the stack, loading the model and segmenting
run in the background, here or on the GPU machine chosen under "Compute" with the same results, and finished
slices appear in the output layer as they are done.

From the napari console::

    dock, widget = viewer.window.add_plugin_dock_widget("napari-granseg", "Few-shot series (SANSA)")
    widget.set_model(gs.load_model("sansa-universal"))   # optional; default: a cached real model, else the demo
    widget.run()                                         # same as pressing Run; widget.busy is False when done
    widget.segmenter                                     # the FewShotSegmenter of the last run (napari-free)
"""
from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (QComboBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton,
                            QVBoxLayout, QWidget)

from ._common import (PRECISIONS, PRECISION_TIP, guard, layer_plan, notify, set_tooltips, show_model_badge,
                      start_describe_models, steady_combo, unique_layer_name)
from ._compute import ComputeSetting
from ._everything_job import ModelShown
from ._fewshot_refs import SCRIBBLE_POINTS, prompts_by_slice
from ._fewshot_session import FewShotRequest, FewShotSession, parse_slices
from ._layer_pixels import CHANNELS_TIP
from ._napari_warmup import start_warmup
from ._tasks import BackgroundTask, WidgetError
from .recovery_hooks import RestoreOffer, record_write

__all__ = ["FewShotWidget", "parse_slices", "prompts_by_slice", "SCRIBBLE_POINTS"]

_NONE = "(none)"


class FewShotWidget(QWidget):
    """Few-shot series segmentation (see the module docstring): a view of a
    :class:`~._fewshot_session.FewShotSession` (``session``). ``segmenter``: the engine of the last run."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Few-shot series")
        self.viewer = napari_viewer
        self.model = None
        self.output_layer = None
        self._source_name = ""
        self._image_name = ""  # the series the output is recorded over (crash recovery)
        self._default_model: tuple[str, bool] | None = None

        self.model_badge = QLabel("")
        self.model_badge.setWordWrap(True)
        self.image_combo = steady_combo()
        self.labels_combo = steady_combo()
        self.points_combo = steady_combo()
        self.slices_edit = QLineEdit()
        self.slices_edit.setPlaceholderText("all slices with labels (or e.g. 0, 5, 9-10)")
        self.model_edit = QLineEdit()
        self.compute = ComputeSetting(on_error=self._compute_failed)
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
        self.session = FewShotSession(self.task, notify=notify)
        self.session.model_shown_changed.connect(self._show_run_model)
        self.session.output_ready.connect(self._add_output)
        self.session.slice_done.connect(self._slice_done)
        self.run_button.clicked.connect(lambda: guard(self.run, "Few-shot", self.session.fail))
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

    # ------------------------------------------------------------------------------------------ running
    @property
    def segmenter(self):
        """The few-shot segmenter of the last run (here, or its stand-in on the GPU worker)."""
        return self.session.segmenter

    @property
    def last_error(self) -> str:
        """The last error message shown by this widget ("" after a run started well)."""
        return self.session.last_error

    @property
    def _done(self) -> int:
        return self.session.done

    def _compute_failed(self, message: str) -> None:
        self.session.fail(message)
        self.status.setText(message)

    def request(self) -> FewShotRequest:
        """What Run would do, from the controls and the layers' shapes (cheap: no pixels are read).
        Raises WidgetError with the fix."""
        image_layer = self._layer(self.image_combo)
        if image_layer is None:
            raise WidgetError("no image layer: open a series (a 3D stack) and pick it as Image.")
        plan = layer_plan(image_layer, self.channels.text())
        if not plan.is_stack:
            raise WidgetError(f"the image layer {image_layer.name!r} is a single 2D image; few-shot needs a "
                              f"series (slices, rows, cols): stack your images, e.g. np.stack(list_of_images).")
        shape = plan.labels_shape
        n = shape[0]
        chosen = parse_slices(self.slices_edit.text(), n) if self.slices_edit.text().strip() else None
        size = self.size_combo.currentText()
        common = dict(plan=plan, layer_name=image_layer.name, chosen=None if chosen is None else tuple(chosen), model=self.model,
                      model_text=self.model_edit.text().strip(), precision=self.precision.currentText(),
                      image_size=None if size == "model size" else int(size))
        labels_layer, prompts_layer = self._layer(self.labels_combo), self._layer(self.points_combo)
        if labels_layer is not None:
            if tuple(labels_layer.data.shape) != shape[:3]:
                raise WidgetError(f"labels layer {labels_layer.name!r} has shape {tuple(labels_layer.data.shape)}, "
                                  f"the image {shape[:3]}: add a Labels layer over the image (Layers > New "
                                  f"Labels).")
            return FewShotRequest(source_name=labels_layer.name, labels=labels_layer.data, **common)
        if prompts_layer is not None:
            by_slice = prompts_by_slice(prompts_layer)
            refs = sorted(i for i in by_slice if 0 <= i < n and (chosen is None or i in chosen))
            if not refs:
                raise WidgetError("no prompts on any slice of the series (or none on the chosen slices).")
            return FewShotRequest(source_name=prompts_layer.name, prompts={i: by_slice[i] for i in refs}, **common)
        raise WidgetError("pick a reference Labels layer (paint the class on a few slices) or a Points/Shapes "
                          "layer.")

    def run(self):
        """Start segmenting in the background (same as pressing Run); returns the napari worker.

        Input mistakes found here raise WidgetError; the others (empty references, a bad model name) are
        shown as notifications when the run reaches them.
        """
        request = self.request()
        worker = self.session.run(request, where=self.compute.session)
        self._source_name = request.source_name
        self._image_name = request.layer_name
        self.output_layer = None
        self.run_button.setEnabled(False)
        return worker

    def _show_run_model(self, shown: ModelShown) -> None:
        if shown.model is not None:
            show_model_badge(self.model_badge, shown.model, real_model="sansa-universal")
        else:
            show_model_badge(self.model_badge, name=shown.name, demo=shown.demo, real_model="sansa-universal")

    def _add_output(self, out, refs, targets, store) -> None:
        base = f"{self._source_name} few-shot"
        self.output_layer = self.viewer.add_labels(out, name=unique_layer_name(self.viewer, base),
                                                   metadata={"store": str(store)} if store else {})
        record_write(self._image_name, self.output_layer, (), None, "few-shot references", self.viewer)
        self.progress.setRange(0, max(1, len(targets)))
        self.status.setText(f"{len(refs)} reference slice(s) {refs}, {len(targets)} target(s)…")

    def _slice_done(self, index: int) -> None:
        if self.output_layer is not None:
            self.output_layer.refresh()  # the job wrote the slice into the layer's array
            record_write(self._image_name, self.output_layer, (index,), None, "few-shot", self.viewer)

    def _finished(self) -> None:
        self.run_button.setEnabled(True)
        if self.output_layer is None:
            return
        cancelled = self.task.is_cancelled()
        store = self.output_layer.metadata.get("store")
        caveat = self.session.caveat()
        self.status.setText(("cancelled after " if cancelled else "done: ") + f"{self._done} target slice(s) "
                            f"segmented into {self.output_layer.name}"
                            + (f" (large series: labels written to {store}; save the layer to keep them, then "
                               f"delete that folder)" if store else "")
                            + (" [DEMO model]" if "DEMO" in self.model_badge.text() else "")
                            + (f". Note: {caveat}." if caveat else ""))

    def cancel(self) -> None:
        """Stop after the current slice (results so far stay in the output layer)."""
        self.task.cancel()

    @property
    def busy(self) -> bool:
        return self.task.running

"""napari dock widget: segment everything in an image at one granularity, or a parts-to-wholes hierarchy.

Use: pick the image layer, type one granularity (``0.5``) or several (``0.1, 0.5, 1.0``), pick the preset
(CPU: 24x24 click grid; GPU: UnSAMv2's 64x64) or set points per side, press Run. Each g gives a NEW Labels
layer ``everything g=0.5`` (a suffix is added when the name is taken: your layers are never overwritten).
With several g values each layer's ``features`` hold ``parent_id`` (the id of the containing object one
level coarser), area and centroid; Export writes one label TIFF per level and a CSV table.

Large data: "scale" tiles an image larger than the model at its own pixel scale (``engine.tiling``) or
squeezes it into one model input; "channels" picks what the model sees of a 2-5 channel image. A stack (numpy,
dask, zarr, level 0 of a multiscale layer) is read one slice at a time with ONE intensity range; the labels of
a large stack (over 512 MB) go to a zarr array in a new temporary folder (named in the status line and in the
layer's metadata["store"]) and are written slice by slice.

From the napari console::

    dock, w = viewer.window.add_plugin_dock_widget("napari-granseg", "Segment everything (UnSAMv2)")
    w.set_model(gs.load_model("unsamv2-plus"))  # optional; default: best available (else the demo model)
    w.granularity.setText("0.1, 0.5, 1.0"); w.run()   # same as pressing Run; w.busy is False when done
    w.hierarchy.to_table(); w.export("/path/to/folder")

The widget only reads its controls and adds the finished layers (one per event-loop turn, so three levels do
not freeze napari at once); reading the image, loading the model, segmenting and building the hierarchy
happen in the background, here or on the GPU machine chosen under "compute", with the same results.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
                            QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ._common import (LAYER_SPACING_MS, PRECISIONS, PRECISION_TIP, guard, layer_plan, notify, set_tooltips,
                      show_model_badge, start_describe_models, steady_combo, unique_layer_name)
from ._compute import ComputeSetting
from ._everything_job import SCALE_TIP, TILE_TIP, EverythingRequest, ModelShown
from ._everything_session import EverythingSession, parse_granularities
from ._layer_pixels import CHANNELS_TIP
from ._napari_warmup import start_warmup
from ._tasks import BackgroundTask, WidgetError
from .recovery_hooks import RestoreOffer, record_write

__all__ = ["EverythingWidget", "parse_granularities", "unique_layer_name"]

PRESETS = {"auto (model's device)": None, "CPU (24 points per side)": "cpu", "GPU (upstream, 64 per side)": "cuda"}


class EverythingWidget(QWidget):
    """Whole-image segmentation at one or several granularities (see the module docstring).

    A view of an :class:`~._everything_session.EverythingSession` (``session``): after a run, ``layers``
    (g -> the new Labels layer), ``hierarchy``; ``task`` is the background runner, ``busy`` True until the
    last layer is added.
    """

    def __init__(self, napari_viewer: Any, model=None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Segment everything")
        self.viewer = napari_viewer
        self.model = model
        self.layers: dict[float, Any] = {}
        self._pending_layers: list[dict] = []
        self._auto_device = "cpu"  # what "auto" means, known once the model list was read (torch imported)

        self.model_badge = QLabel("")
        self.model_badge.setWordWrap(True)
        self.image_combo = steady_combo()
        self.model_combo = steady_combo(min_chars=12)
        self.precision = QComboBox()
        self.precision.addItems(list(PRECISIONS))
        self.channels = QLineEdit()
        self.channels.setPlaceholderText("none (gray or RGB)")
        self.scale = QComboBox()
        self.scale.addItems(["auto", "tile", "downscale"])
        self.tile = QSpinBox()
        self.tile.setRange(0, 8192)
        self.tile.setSingleStep(128)
        self.tile.setSpecialValueText("model size")
        self.granularity = QLineEdit("0.5")
        self.preset = QComboBox()
        self.preset.addItems(list(PRESETS))
        self.points = QSpinBox()
        self.points.setRange(2, 128)
        self.points.setValue(24)
        self.stability = QDoubleSpinBox()
        self.stability.setRange(0.0, 1.0)
        self.stability.setSingleStep(0.05)
        self.stability.setSpecialValueText("auto (per g)")
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.export_button = QPushButton("Export…")
        self.export_button.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.compute = ComputeSetting(on_change=lambda _session: self._update_buttons(),
                                      on_error=self._compute_failed)
        set_tooltips([
            (self.image_combo, "the image layer to segment (2D, RGB, or a z/t stack: every slice is segmented)"),
            (self.model_combo, "UnSAMv2 model: default = a real checkpoint if one is cached, else the bundled "
                               "DEMO model"),
            (self.precision, PRECISION_TIP),
            (self.channels, CHANNELS_TIP),
            (self.scale, SCALE_TIP),
            (self.tile, TILE_TIP),
            (self.granularity, "one value in [0.1, 1], or a comma list (0.1, 0.5, 1.0) for a parts-to-wholes "
                               "hierarchy; 0.1 = finest parts, 1.0 = whole objects"),
            (self.preset, "click-grid preset: CPU = 24x24 points (fast), GPU = UnSAMv2's 64x64"),
            (self.points, "click grid = points x points prompts; time grows with its square"),
            (self.stability, "keep masks whose stability score is at least this (auto = the model's default: "
                             "0.7 for UnSAMv2, 0.95 for SAM 2, 0.9 for the bundled demo). Raise it when objects "
                             "come back split into pieces."),
            (self.run_button, "segment the whole image at each granularity: one NEW Labels layer per value"),
            (self.cancel_button, "stop after the current slice/batch (layers are added only for complete runs)"),
            (self.export_button, "write the last run's label TIFFs (one per granularity) and the hierarchy CSV "
                                 "to a folder (enabled after a run)"),
            (self.progress, "progress of the running task"),
        ])

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("model", self.model_combo)
        form.addRow("compute", self.compute.row)
        form.addRow("precision", self.precision)
        form.addRow("channels", self.channels)
        form.addRow("scale", self.scale)
        form.addRow("tile size", self.tile)
        form.addRow("granularity", self.granularity)
        form.addRow("preset", self.preset)
        form.addRow("points per side", self.points)
        form.addRow("min stability", self.stability)
        buttons = QHBoxLayout()
        for b in (self.run_button, self.cancel_button, self.export_button):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addWidget(self.model_badge)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(RestoreOffer(napari_viewer, self.status))
        layout.addStretch(1)

        self.task = BackgroundTask(self.progress, self.cancel_button, self.status, context="Segment everything")
        self.task.on_any_finished(self._update_buttons)
        self.session = EverythingSession(self.task, notify=notify)
        self.session.model_shown_changed.connect(self._show_run_model)
        self.session.finished.connect(self._add_results)
        self.session.failed.connect(self._update_buttons)
        self.run_button.clicked.connect(self._run_clicked)
        self.export_button.clicked.connect(self._export_clicked)
        self.preset.currentTextChanged.connect(self._preset_changed)
        self.model_combo.currentTextChanged.connect(lambda *_: self._show_model_choice())
        for ev in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            ev.connect(lambda *_: self._refresh_images())
        self._default_model: tuple[str, bool] | None = None
        self._fill_models()
        self._refresh_images()
        self._preset_changed(self.preset.currentText())
        # napari's first-layer imports in a worker (the results are Labels layers), then the zoo (imports torch)
        start_warmup(lambda: self.model is None and start_describe_models("unsamv2", self._models_described))

    # ---------------------------------------------------------------- choices
    def _fill_models(self, names: list[str] | None = None) -> None:
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        if self.model is not None:
            self.model_combo.addItem(f"given: {getattr(self.model, 'name', 'model')}")
        else:
            self.model_combo.addItem("default (best available)")
            self.model_combo.addItems(names or [])
        self.model_combo.blockSignals(False)
        self._show_model_choice()

    def _models_described(self, described) -> None:
        names, default, demo = described
        self._default_model = (default, demo)
        self._auto_device = _auto_device()
        self._preset_changed(self.preset.currentText())  # torch is imported now: "auto" can see a GPU
        if self.model is None:
            current = self.model_combo.currentText()
            self._fill_models(names)
            if current in names:
                self.model_combo.setCurrentText(current)
        self._show_model_choice()

    def _show_model_choice(self) -> None:
        """The badge says which model a run will use; DEMO (orange) whenever that is a demo model."""
        if self.model is not None:
            show_model_badge(self.model_badge, self.model, real_model="unsamv2-plus")
            return
        choice = self.model_combo.currentText()
        if choice.startswith("default"):
            if self._default_model is None:
                self.model_badge.setText("model: default (finding the best available…)")
                return
            name, demo = self._default_model
        else:
            name, demo = choice, choice.endswith("-demo")
        show_model_badge(self.model_badge, name=name, demo=demo, real_model="unsamv2-plus")

    def set_model(self, model) -> None:
        """Use ``model`` (a LoadedModel from ``gs.load_model``) instead of the zoo choice."""
        self.model = model
        self._fill_models()
        self._preset_changed(self.preset.currentText())

    def _refresh_images(self) -> None:
        from napari.layers import Image

        current = self.image_combo.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)

    def _preset_changed(self, text: str) -> None:
        device = PRESETS.get(text)
        if device is None:
            device = str(self.model.device) if self.model is not None else self._auto_device
        self.points.setValue(24 if device.startswith("cpu") else 64)

    @property
    def busy(self) -> bool:
        """True while a run computes or its layers are still being added."""
        return self.task.running or bool(self._pending_layers)

    def _update_buttons(self) -> None:
        self.run_button.setEnabled(not self.busy)
        self.export_button.setEnabled(not self.busy and self.hierarchy is not None)

    @property
    def hierarchy(self):
        """The parts-to-wholes hierarchy of the last run (None before a run, or for labels written to disk)."""
        return self.session.hierarchy

    @property
    def last_error(self) -> str:
        """The last error message shown by this widget ("" after a run started well)."""
        return self.session.last_error

    # ---------------------------------------------------------------- running
    def _run_clicked(self) -> None:
        guard(self.run, "Segment everything", self.session.fail)

    def _compute_failed(self, message: str) -> None:
        self.session.fail(message)
        self.status.setText(message)

    def request(self) -> EverythingRequest:
        """What Run would do, read from the controls and the image layer's shape (no pixels are read)."""
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise WidgetError("pick an image layer (open an image or a sample first: File > Open Sample)")
        layer = self.viewer.layers[name]
        plan = layer_plan(layer, self.channels.text(), self.scale.currentText(), int(self.tile.value()) or None)
        source = tuple(tuple(np.asarray(v)[list(plan.spatial_axes)]) for v in (layer.scale, layer.translate))
        choice = self.model_combo.currentText()
        model = self.model if self.model is not None else (None if choice.startswith("default") else choice)
        return EverythingRequest(plan=plan, layer_name=name, source=source,
                                 granularities=tuple(parse_granularities(self.granularity.text())), model=model,
                                 precision=self.precision.currentText(), points=int(self.points.value()),
                                 stability=float(self.stability.value()))

    def run(self):
        """Start segmenting in the background (same as pressing Run); returns the napari worker."""
        if self.busy:
            raise WidgetError("a run is in progress: wait for it or press Cancel")
        request = self.request()
        worker = self.session.run(request, where=self.compute.session)
        self.run_button.setEnabled(False)
        self.export_button.setEnabled(False)
        return worker

    def _show_run_model(self, shown: ModelShown) -> None:
        if shown.model is not None:
            show_model_badge(self.model_badge, shown.model, real_model="unsamv2-plus")
        else:
            show_model_badge(self.model_badge, name=shown.name, demo=shown.demo, real_model="unsamv2-plus")

    def _add_results(self, specs: dict) -> None:
        """Add the finished layers one at a time, napari drawing in between (see ``LAYER_SPACING_MS``)."""
        self.layers = {}
        self._pending_layers = list(specs["layers"])
        self.status.setText(specs["summary"])
        self._update_buttons()
        QTimer.singleShot(0, self._add_next_layer)

    def _add_next_layer(self) -> None:
        if not self._pending_layers:
            return
        spec = self._pending_layers.pop(0)
        try:
            new = self.viewer.add_labels(spec["data"], name=unique_layer_name(self.viewer, spec["name"]),
                                         features=spec["features"], scale=spec["scale"],
                                         translate=spec["translate"], metadata=spec["metadata"])
            self.layers[spec["key"]] = new
            record_write(spec["metadata"]["source"], new, (), None, "segment everything", self.viewer)
        except RuntimeError as err:  # the viewer was closed meanwhile
            if "has been deleted" not in str(err):
                raise
            self._pending_layers.clear()
        if self._pending_layers:
            QTimer.singleShot(LAYER_SPACING_MS, self._add_next_layer)
        self._update_buttons()
    # ---------------------------------------------------------------- export
    def export(self, folder) -> list:
        """Write the last run's label TIFFs (one per g) and the hierarchy CSV to ``folder``; returns paths."""
        # what the layers hold now: the user may have corrected labels
        levels = {g: np.asarray(layer.data) for g, layer in self.layers.items() if layer in self.viewer.layers}
        return self.session.export(folder, levels)

    def _export_clicked(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self, "Export labels and hierarchy table to folder")
        if not folder:
            return
        paths = guard(lambda: self.export(folder), "Export", self.session.fail)
        if paths is not None:
            notify("info", f"wrote {len(paths)} files to {folder}")


def _auto_device() -> str:
    """The device "auto" means (call it once torch is imported, as after the model list was read)."""
    from ..devices import resolve_device

    try:
        return resolve_device("auto").type
    except Exception:  # noqa: BLE001 - a broken GPU setup: the CPU preset is the safe one
        return "cpu"

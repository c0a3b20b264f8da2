"""napari dock widget: segment everything in an image at one granularity, or a parts-to-wholes hierarchy.

Use: pick the image layer, type one granularity (``0.5``) or several (``0.1, 0.5, 1.0``), pick the preset
(CPU: 24x24 click grid; GPU: UnSAMv2's 64x64) or set points per side, press Run. Each g gives a NEW Labels
layer ``everything g=0.5`` (a suffix is added when the name is taken: your layers are never overwritten).
With several g values each layer's ``features`` hold ``parent_id`` (the id of the containing object one
level coarser), area and centroid; Export writes one label TIFF per level and a CSV table.

From the napari console::

    dock, w = viewer.window.add_plugin_dock_widget("napari-granseg", "Segment everything (UnSAMv2)")
    w.set_model(gs.load_model("unsamv2-plus"))  # optional; default: best available (else the demo model)
    w.granularity.setText("0.1, 0.5, 1.0"); w.run()
    w.hierarchy.to_table(); w.export("/path/to/folder")
"""
from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
                            QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ._tasks import BackgroundTask, Progress, blocking_with_progress, notify_error

__all__ = ["EverythingWidget", "parse_granularities", "unique_layer_name"]

PRESETS = {"auto (model's device)": None, "CPU (24 points per side)": "cpu", "GPU (upstream, 64 per side)": "cuda"}


def parse_granularities(text: str) -> list[float]:
    """'0.1, 0.5,1' -> [0.1, 0.5, 1.0] (sorted, unique); raises ValueError saying what to type."""
    values = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(float(part))
        except ValueError:
            raise ValueError(f"cannot read granularity {part!r}: type one number in [0.1, 1] or a comma list "
                             f"such as '0.1, 0.5, 1.0'") from None
    if not values:
        raise ValueError("type a granularity in [0.1, 1] (0.1 = finest parts, 1.0 = whole objects), or a comma "
                         "list for a hierarchy")
    bad = [v for v in values if not 0.1 - 1e-6 <= v <= 1.0 + 1e-6]
    if bad:
        raise ValueError(f"granularity {bad} is outside [0.1, 1]: 0.1 = finest parts, 1.0 = whole objects")
    return sorted(set(values))


def unique_layer_name(viewer, name: str) -> str:
    """``name``, or ``name [2]``, ``name [3]``... so that no existing layer is replaced or renamed."""
    taken = {layer.name for layer in viewer.layers}
    if name not in taken:
        return name
    k = 2
    while f"{name} [{k}]" in taken:
        k += 1
    return f"{name} [{k}]"


class EverythingWidget(QWidget):
    """Whole-image segmentation at one or several granularities (see the module docstring).

    After a run: ``layers`` (g -> the new Labels layer), ``hierarchy`` (a
    :class:`~napari_granseg.engine.hierarchy.Hierarchy`), ``task`` (the background runner).
    """

    def __init__(self, napari_viewer: Any, model=None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Segment everything")
        self.viewer = napari_viewer
        self.model = model
        self.layers: dict[float, Any] = {}
        self.hierarchy = None

        self.image_combo = QComboBox()
        self.model_combo = QComboBox()
        self.granularity = QLineEdit("0.5")
        self.granularity.setToolTip("one value in [0.1, 1], or a comma list (0.1, 0.5, 1.0) for a hierarchy")
        self.preset = QComboBox()
        self.preset.addItems(list(PRESETS))
        self.points = QSpinBox()
        self.points.setRange(2, 128)
        self.points.setValue(24)
        self.points.setToolTip("click grid = points x points prompts; time grows with its square")
        self.stability = QDoubleSpinBox()
        self.stability.setRange(0.0, 1.0)
        self.stability.setSingleStep(0.05)
        self.stability.setSpecialValueText("auto (per g)")
        self.stability.setToolTip("keep masks whose stability score is at least this (0 = the model's default: "
                                  "0.7 for UnSAMv2, 0.95 for SAM 2, 0.9 for the bundled demo). Raise it when "
                                  "objects come back split into pieces.")
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.export_button = QPushButton("Export…")
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("model", self.model_combo)
        form.addRow("granularity", self.granularity)
        form.addRow("preset", self.preset)
        form.addRow("points per side", self.points)
        form.addRow("min stability", self.stability)
        buttons = QHBoxLayout()
        for b in (self.run_button, self.cancel_button, self.export_button):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.task = BackgroundTask(self.progress, self.cancel_button, self.status, context="Segment everything")
        self.run_button.clicked.connect(self._run_clicked)
        self.export_button.clicked.connect(self._export_clicked)
        self.preset.currentTextChanged.connect(self._preset_changed)
        self.task.on_any_finished(lambda: self.run_button.setEnabled(True))
        for ev in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            ev.connect(lambda *_: self._refresh_images())
        self._fill_models()
        self._refresh_images()
        self._preset_changed(self.preset.currentText())

    # ---------------------------------------------------------------- choices
    def _fill_models(self) -> None:
        self.model_combo.clear()
        if self.model is not None:
            self.model_combo.addItem(f"given: {getattr(self.model, 'name', 'model')}")
            return
        from ..zoo import ZOO

        self.model_combo.addItem("default (best available)")
        self.model_combo.addItems([s.name for s in ZOO.values() if s.kind == "unsamv2"])

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
            device = str(getattr(self.model, "device", "cpu")) if self.model is not None else _auto_device()
        self.points.setValue(24 if device.startswith("cpu") else 64)

    @staticmethod
    def _settings(predictor, g, preset_device: str | None, points: int, stability: float = 0.0):
        from ..engine.automatic import AutomaticSettings, model_defaults

        extra = {**model_defaults(predictor), "points_per_side": points}
        if stability > 0:
            extra["stability_score_thresh"] = stability
        return AutomaticSettings.for_device(preset_device or predictor.device, g, **extra)

    @staticmethod
    def _predictor(model, choice: str):
        from ..api import get_predictor

        if model is not None:
            return get_predictor(model)
        return get_predictor(None if choice.startswith("default") else choice)

    # ---------------------------------------------------------------- running
    def _run_clicked(self) -> None:
        try:
            self.run()
        except Exception as exc:  # noqa: BLE001 - user errors become notifications
            notify_error(exc, "Segment everything")

    def run(self):
        """Start segmenting in the background (same as pressing Run); returns the napari worker."""
        if self.task.running:
            raise RuntimeError("a run is in progress: wait for it or press Cancel")
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise ValueError("pick an image layer (open an image or a sample first: File > Open Sample)")
        layer = self.viewer.layers[name]
        if getattr(layer, "multiscale", False):
            raise ValueError(f"layer {name!r} is multiscale: segment one scale level (e.g. layer.data[-1])")
        image = np.asarray(layer.data)
        rgb = bool(getattr(layer, "rgb", False))
        is_stack = image.ndim == (4 if rgb else 3)
        if image.ndim > (4 if rgb else 3):
            raise ValueError(f"layer {name!r} has {image.ndim} dimensions: pass a 2D image or a z/t stack")
        gvals = parse_granularities(self.granularity.text())
        source = (layer.scale, layer.translate)
        # read every Qt control here, on the GUI thread; the job runs in a worker thread. Import the engine
        # here too: importing torchvision for the first time in a worker thread segfaults (torch import locks)
        from ..engine import automatic, hierarchy  # noqa: F401

        model, choice = self.model, self.model_combo.currentText()
        preset_device, points = PRESETS.get(self.preset.currentText()), int(self.points.value())
        stability = float(self.stability.value())
        self.run_button.setEnabled(False)

        def job(is_cancelled):
            yield Progress(0, 0, "loading the model…")
            pred = self._predictor(model, choice)
            granularity = gvals if pred.has_granularity else [None]
            results = {}
            for k, g in enumerate(granularity):
                settings = self._settings(pred, g, preset_device, points, stability)
                label = "SAM 2" if g is None else f"g={g:g}"
                yield Progress(0, 0, f"{label}: {settings.points_per_side ** 2} prompts per image"
                                     f" ({k + 1}/{len(granularity)})")
                if is_stack:
                    from ..engine.automatic import segment_everything_stack

                    def fn(progress, cancel, g=g, settings=settings):
                        return segment_everything_stack(pred, image, g, progress, cancel, settings), None
                else:
                    from ..engine.automatic import segment_everything

                    def fn(progress, cancel, g=g, settings=settings):
                        return segment_everything(pred, image, g, progress, cancel, settings, return_info=True)
                results[g] = yield from blocking_with_progress(fn, is_cancelled)
            return results

        def done(results):
            self._add_results(results, name, source)

        return self.task.start(job, on_done=done, message="starting…")

    def _add_results(self, results: dict, source_name: str, source) -> None:
        from ..engine.hierarchy import build_hierarchy, level_name

        levels = {(1.0 if g is None else g): lab for g, (lab, _) in results.items()}
        self.hierarchy = build_hierarchy(levels)
        self.layers = {}
        scale, translate = source
        for g, (lab, info) in results.items():
            key = 1.0 if g is None else g
            features = self.hierarchy.features(key)
            if info is not None and len(features):
                by_id = {i + 1: d for i, d in enumerate(info)}
                features["predicted_iou"] = [by_id[int(i)]["predicted_iou"] for i in features["index"]]
                features["stability_score"] = [by_id[int(i)]["stability_score"] for i in features["index"]]
            base = "everything SAM 2" if g is None else f"everything g={level_name(g)}"
            new = self.viewer.add_labels(lab, name=unique_layer_name(self.viewer, base), features=features,
                                         scale=scale[-lab.ndim:], translate=translate[-lab.ndim:],
                                         metadata={"granularity": g, "source": source_name})
            self.layers[key] = new
        n = {g: int(lab.max()) for g, (lab, _) in results.items()}
        self.status.setText("objects: " + ", ".join(f"{'SAM 2' if g is None else f'g={g:g}'}: {v}"
                                                    for g, v in n.items()))

    # ---------------------------------------------------------------- export
    def export(self, folder) -> list:
        """Write the last run's label TIFFs (one per g) and the hierarchy CSV to ``folder``; returns paths."""
        if self.hierarchy is None:
            raise ValueError("nothing to export yet: press Run first")
        # export what the layers hold now (the user may have corrected labels)
        levels = {g: np.asarray(layer.data) for g, layer in self.layers.items() if layer in self.viewer.layers}
        from ..engine.hierarchy import build_hierarchy

        hierarchy = build_hierarchy(levels) if levels else self.hierarchy
        return hierarchy.export(folder)

    def _export_clicked(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self, "Export labels and hierarchy table to folder")
        if not folder:
            return
        try:
            paths = self.export(folder)
        except Exception as exc:  # noqa: BLE001
            notify_error(exc, "Export")
            return
        from napari.utils.notifications import show_info

        show_info(f"wrote {len(paths)} files to {folder}")


def _auto_device() -> str:
    from ..devices import resolve_device

    try:
        return resolve_device("auto").type
    except Exception:  # noqa: BLE001
        return "cpu"


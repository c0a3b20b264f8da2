"""The interactive dock widget: click an object, slide the granularity, commit it as a label; stacks too.

How it works (see docs/widgets.md for the user's side):

- Clicks are points of a napari Points layer, "granseg prompts", in add mode: a click is a positive prompt,
  Shift+click (or any click while "negative clicks" is on, key T) a negative one. The feature column
  ``positive`` holds the sign; positives are drawn as green discs, negatives as magenta crosses. The layer can
  be edited like any Points layer (select, move, delete), and the preview follows.
- Only the prompts on the slice shown (``viewer.dims``) count: on a z-stack or time series the widget
  segments the current slice.
- Every model call runs in a napari thread worker (:mod:`._tasks`); the GUI thread only draws. The first
  click on a slice computes its embedding (cached, LRU); slider moves and further clicks only run the
  decoder (debounced, ``DEBOUNCE_MS``), newest request wins.
- Commit writes the preview into the target Labels layer with ``Labels.data_setitem`` (napari's undo-aware
  edit: Ctrl+Z / ``labels.undo()`` removes it), as a new id (max + 1), only on background pixels.
- Propagate runs :func:`napari_granseg.engine.propagate.propagate` from the last committed object's clicks
  and granularity, and writes the object (same id) into the other slices, again only on background, as one
  undo step.
- Large images: the engine decimates the image to about the model size for the embedding
  (:func:`~napari_granseg.engine.normalize.downsample_for_model`); masks come back at full resolution.

Console: ``dock, w = viewer.window.add_plugin_dock_widget("napari-granseg", "Interactive (UnSAMv2)")``,
then ``w.model``, ``w.predictor``, ``w.segment_points([(row, col)], granularity=0.3)``, ``w.commit()``,
``w.state``.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QProgressBar,
                            QPushButton, QVBoxLayout, QWidget)

from ._tasks import USER_ERRORS, BackgroundTask, Progress, avoid_triton_llvm_crash, blocking_with_progress

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from ..models.loaded import LoadedModel

__all__ = ["InteractiveWidget", "WidgetError", "SHORTCUTS"]

log = logging.getLogger(__name__)

PROMPTS_NAME = "granseg prompts"
PREVIEW_NAME = "granseg preview"
LABELS_NAME = "granseg labels"
NEW_LABELS_ITEM = f"new layer: {LABELS_NAME}"
DEBOUNCE_MS = 80
G_STEP = 0.05
#: at most this many bytes of cached slice embeddings for "Embed all slices" (then the nearest slices first)
EMBED_BUDGET_BYTES = 1 << 30
POSITIVE_COLOR = (0.1, 0.9, 0.2, 1.0)
NEGATIVE_COLOR = (1.0, 0.1, 0.8, 1.0)

#: (key as napari writes it, action, description). Bound on the "granseg prompts" layer (active while clicking).
SHORTCUTS: tuple[tuple[str, str, str], ...] = (
    ("Shift+click", "", "negative click (in the prompts layer's add mode)"),
    ("C", "commit", "commit the preview as a new label (then start the next object)"),
    ("N", "next_object", "next object: discard the current clicks and preview"),
    ("T", "toggle_negative", "toggle negative clicks"),
    (".", "granularity_up", f"granularity + {G_STEP}"),
    (",", "granularity_down", f"granularity - {G_STEP}"),
    ("Shift+P", "propagate", "propagate the last committed object through the stack"),
    ("Control+Z", "undo", "undo the last commit/propagation (in the target labels layer)"),
    ("Control+Shift+Z", "redo", "redo"),
)


def shortcuts_text() -> str:
    """The shortcut list shown in the widget's tooltip (and docs/widgets.md)."""
    return "Shortcuts (prompts layer active):\n" + "\n".join(f"  {k}: {d}" for k, _, d in SHORTCUTS)


class WidgetError(ValueError):
    """A user mistake in the widget (no image, wrong view, ...); the message says what to do."""


@dataclass
class PreviewRequest:
    """A snapshot of what to segment, taken on the GUI thread."""

    serial: int
    layer: Any                      # napari Image layer
    index: tuple[int, ...]          # leading (z/t/...) indices of the slice
    image: np.ndarray               # the 2D (H, W[, C]) slice
    points_xy: np.ndarray           # (N, 2) (x, y) pixels
    point_labels: np.ndarray        # (N,) 1/0
    granularity: float | None


@dataclass
class CommitRecord:
    """What the last commit wrote, for propagation and the console."""

    image_layer: Any
    labels_layer: Any
    label_id: int
    index: tuple[int, ...]
    points_xy: np.ndarray
    point_labels: np.ndarray
    granularity: float | None
    n_pixels: int = 0
    extra: dict = field(default_factory=dict)


def _spatial_ndim(layer) -> int:
    return int(layer.ndim)  # napari's Image.ndim excludes the RGB(A) channel axis


def _base_data(layer):
    """Full-resolution data of an Image layer (level 0 of a multiscale pyramid)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def _spatial_shape(layer) -> tuple[int, ...]:
    shape = tuple(int(s) for s in _base_data(layer).shape)
    return shape[:-1] if layer.rgb else shape


class InteractiveWidget(QWidget):
    """Dock widget for interactive UnSAMv2 segmentation at any granularity (see the module docstring)."""

    preview_updated = Signal()      # a new preview is shown (or cleared)
    committed = Signal(int)         # the new label id
    propagated = Signal(int)        # number of slices the object was written into
    model_changed = Signal()
    embedded = Signal(int)          # number of slices embedded by "Embed all slices"

    def __init__(self, napari_viewer: "napari.viewer.Viewer", model: "LoadedModel | None" = None,
                 load_default: bool = True):
        super().__init__()
        self.viewer = napari_viewer
        self.model: LoadedModel | None = None
        self.predictor = None
        self.last_commit: CommitRecord | None = None
        self.last_message: tuple[str, str] | None = None
        self._model_lock = threading.Lock()
        self._model_serial = 0
        self._preview_serial = 0
        self._preview_pending = False
        self._preview: tuple[PreviewRequest, np.ndarray] | None = None
        self._prompts_for = None
        self._shift_at_press = False
        self._building = True
        self.setWindowTitle("Interactive (UnSAMv2)")
        self._build_ui()
        self._task = BackgroundTask(self.progress, self.cancel_button, self.status, context="GranSeg")
        self._preview_task = BackgroundTask(self.preview_busy, None, None, context="GranSeg preview")
        self._preview_task.on_any_finished(self._after_preview)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self._request_preview)
        self._connect_viewer()
        self._refresh_layer_choices()
        self._building = False
        if model is not None:
            self.set_model(model)
        elif load_default:
            QTimer.singleShot(0, self._load_clicked)

    # ================================================================ UI
    def _build_ui(self) -> None:
        from .. import zoo

        outer = QVBoxLayout(self)
        form = QFormLayout()
        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        form.addRow("Image", self.image_combo)
        form.addRow("Labels", self.labels_combo)

        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)
        self.model_combo.addItems([n for n, s in zoo.ZOO.items() if s.kind in ("unsamv2", "sam2")])
        self.model_combo.setToolTip("a zoo name, or the path of an UnSAMv2 checkpoint file")
        try:
            self.model_combo.setCurrentText(zoo.default_model_name("unsamv2"))
        except Exception:  # pragma: no cover - never block the UI on the zoo
            self.model_combo.setCurrentText("unsamv2-demo")
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.load_button = QPushButton("Load")
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.device_combo)
        row.addWidget(self.load_button)
        form.addRow("Model", row)
        self.model_label = QLabel("no model loaded")
        self.model_label.setWordWrap(True)
        form.addRow("", self.model_label)

        from superqt import QLabeledDoubleSlider

        self.granularity_slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.granularity_slider.setRange(0.1, 1.0)
        self.granularity_slider.setSingleStep(0.01)
        self.granularity_slider.setDecimals(2)
        self.granularity_slider.setValue(0.5)
        self.granularity_slider.setToolTip("0.1 = the smallest part under the click ... 1.0 = the whole object")
        form.addRow("Granularity", self.granularity_slider)
        self.negative_check = QCheckBox("negative clicks (T; or Shift+click)")
        form.addRow("", self.negative_check)
        outer.addLayout(form)

        buttons = QHBoxLayout()
        self.commit_button = QPushButton("Commit (C)")
        self.next_button = QPushButton("Next object (N)")
        self.undo_button = QPushButton("Undo")
        for b in (self.commit_button, self.next_button, self.undo_button):
            buttons.addWidget(b)
        outer.addLayout(buttons)

        stack_box = QGroupBox("Stacks (z or t)")
        stack_row = QHBoxLayout(stack_box)
        self.embed_all_button = QPushButton("Embed all slices")
        self.propagate_button = QPushButton("Propagate (Shift+P)")
        stack_row.addWidget(self.embed_all_button)
        stack_row.addWidget(self.propagate_button)
        outer.addWidget(stack_box)

        self.preview_busy = QProgressBar()
        self.preview_busy.setMaximumHeight(6)
        self.preview_busy.setTextVisible(False)
        self.progress = QProgressBar()
        self.cancel_button = QPushButton("Cancel")
        prow = QHBoxLayout()
        prow.addWidget(self.progress, 1)
        prow.addWidget(self.cancel_button)
        outer.addWidget(self.preview_busy)
        outer.addLayout(prow)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        outer.addWidget(self.status)
        help_label = QLabel("Shortcuts: hover here")
        help_label.setToolTip(shortcuts_text())
        outer.addWidget(help_label)
        outer.addStretch(1)
        self.setToolTip(shortcuts_text())

        self.load_button.clicked.connect(self._load_clicked)
        self.granularity_slider.valueChanged.connect(lambda _v: self._schedule_preview())
        self.commit_button.clicked.connect(lambda: self._guard(self.commit))
        self.next_button.clicked.connect(lambda: self._guard(self.next_object))
        self.undo_button.clicked.connect(lambda: self._guard(self.undo))
        self.embed_all_button.clicked.connect(lambda: self._guard(self.embed_all_slices))
        self.propagate_button.clicked.connect(lambda: self._guard(self.propagate))
        self.negative_check.toggled.connect(self._negative_toggled)
        self.image_combo.currentIndexChanged.connect(lambda _i: self._image_changed())

    def _connect_viewer(self) -> None:
        layers = self.viewer.layers
        layers.events.inserted.connect(self._refresh_layer_choices)
        layers.events.removed.connect(self._refresh_layer_choices)
        self.viewer.dims.events.current_step.connect(self._slice_changed)

    def _refresh_layer_choices(self, event=None) -> None:
        from napari.layers import Image, Labels

        own = (PROMPTS_NAME, PREVIEW_NAME)
        current = self.image_combo.currentText()
        images = [l.name for l in self.viewer.layers if isinstance(l, Image)]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(images)
        if current in images:
            self.image_combo.setCurrentText(current)
        elif images:
            self.image_combo.setCurrentIndex(len(images) - 1)  # the newest image
        self.image_combo.blockSignals(False)
        lab_current = self.labels_combo.currentText()
        labels = [l.name for l in self.viewer.layers if isinstance(l, Labels) and l.name not in own]
        self.labels_combo.blockSignals(True)
        self.labels_combo.clear()
        self.labels_combo.addItems([NEW_LABELS_ITEM] + labels)
        if lab_current in labels:
            self.labels_combo.setCurrentText(lab_current)
        elif LABELS_NAME in labels:
            self.labels_combo.setCurrentText(LABELS_NAME)
        self.labels_combo.blockSignals(False)
        if current != self.image_combo.currentText():
            self._image_changed()
        self._update_stack_buttons()

    # ================================================================ notifications
    def _notify(self, level: str, message: str) -> None:
        """Show a napari notification and keep it in ``last_message`` (tests, console)."""
        from napari.utils import notifications

        self.last_message = (level, message)
        {"error": notifications.show_error, "warning": notifications.show_warning,
         "info": notifications.show_info}[level](message)

    def _guard(self, fn: Callable[[], Any]) -> Any:
        """Run a GUI action; user mistakes become notifications (the message says what to do)."""
        try:
            return fn()
        except USER_ERRORS as exc:
            self._notify("error", str(exc))
        except Exception as exc:  # a bug: still no dialog, but a logged traceback
            log.exception("napari-granseg interactive widget")
            self._notify("error", f"{type(exc).__name__}: {exc}")
        return None

    # ================================================================ model
    def _load_clicked(self) -> None:
        self._guard(lambda: self.load_model(self.model_combo.currentText().strip() or None,
                                            self.device_combo.currentText()))

    def load_model(self, name_or_path: str | None = None, device: str = "auto") -> None:
        """Load a model in a thread worker (zoo name, checkpoint path, or None = default); non-blocking."""
        from .. import zoo

        avoid_triton_llvm_crash()  # before anything imports torchvision (see _tasks)
        if self._task.running:
            raise WidgetError("wait for the running task to finish (or press Cancel) before loading a model")
        self._model_serial += 1
        serial = self._model_serial
        label = name_or_path or "default model"

        def job(is_cancelled):
            yield Progress(0, 0, f"loading {label}…")
            named = name_or_path is None or name_or_path in zoo.ZOO
            loaded = zoo.load_model(name_or_path, kind=None if named else "unsamv2", device=device)
            if loaded.kind not in ("unsamv2", "sam2"):
                raise WidgetError(f"{loaded.name} is a {loaded.kind} model; the interactive widget needs an "
                                  f"UnSAMv2 (or SAM 2) model, e.g. 'unsamv2-plus'. SANSA models go in the "
                                  f"few-shot widget.")
            return loaded

        def done(loaded):
            if serial == self._model_serial:  # a model injected meanwhile wins
                self.set_model(loaded)

        self._task.start(job, on_done=done, message=f"loading {label}…")

    def set_model(self, loaded: "LoadedModel", cache_size: int = 8) -> None:
        """Use ``loaded`` (a LoadedModel from ``gs.load_model``); builds a fresh GranularityPredictor."""
        avoid_triton_llvm_crash()  # before the engine imports torchvision (see _tasks)
        from ..engine.interactive import GranularityPredictor

        self._model_serial += 1
        with self._model_lock:
            self.model = loaded
            self.predictor = GranularityPredictor(loaded, cache_size=cache_size)
        demo = getattr(loaded, "is_demo", False)
        text = f"{loaded.name} on {loaded.device}"
        if demo:
            text = (f"DEMO model ({loaded.name}): trained on synthetic cells only. For real images load "
                    f"'unsamv2-plus' (see docs/checkpoints.md).")
        if not self.predictor.has_granularity:
            text += " | stock SAM 2: no granularity input, the slider is ignored"
        self.model_label.setText(text)
        self.model_label.setStyleSheet("color: orange;" if demo else "")
        self.granularity_slider.setEnabled(self.predictor.has_granularity)
        self.status.setText("model ready: click an object (prompts layer, add mode)")
        self.model_changed.emit()
        self._schedule_preview()

    def _require_model(self):
        if self.predictor is None:
            raise WidgetError("no model loaded yet: press Load (the first load can take a while), or wait for "
                              "the default model to finish loading")
        return self.predictor

    # ================================================================ layers and slices
    @property
    def image_layer(self):
        """The selected Image layer (None if there is none)."""
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    @property
    def labels_layer(self):
        """The target Labels layer (None until the first commit creates "granseg labels")."""
        name = self.labels_combo.currentText()
        if name and name != NEW_LABELS_ITEM and name in self.viewer.layers:
            return self.viewer.layers[name]
        return None

    @property
    def prompts_layer(self):
        return self.viewer.layers[PROMPTS_NAME] if PROMPTS_NAME in self.viewer.layers else None

    @property
    def preview_layer(self):
        return self.viewer.layers[PREVIEW_NAME] if PREVIEW_NAME in self.viewer.layers else None

    @property
    def granularity(self) -> float:
        return float(round(self.granularity_slider.value(), 3))

    @granularity.setter
    def granularity(self, value: float) -> None:
        self.granularity_slider.setValue(float(np.clip(value, 0.1, 1.0)))

    def _require_image(self):
        layer = self.image_layer
        if layer is None:
            raise WidgetError("no image layer: open an image first (File > Open, or File > Open Sample > "
                              "GranSeg), then pick it in the widget's Image box")
        if _spatial_ndim(layer) < 2:
            raise WidgetError(f"layer {layer.name!r} is 1D; the widget needs 2D images or stacks of them")
        return layer

    def _check_view(self) -> None:
        dims = self.viewer.dims
        if dims.ndisplay != 2:
            raise WidgetError("the interactive widget works in the 2D view: press Ctrl+Y (or the 2D/3D "
                              "button, bottom left) to switch back to 2D")
        n = dims.ndim
        if set(dims.displayed) != {n - 2, n - 1}:
            raise WidgetError("the image's last two axes (rows, columns) must be the ones displayed: undo the "
                              "axis roll/transpose (Ctrl+E / Ctrl+T) or reset with viewer.dims.order = "
                              "tuple(range(viewer.dims.ndim))")

    def current_index(self, layer=None) -> tuple[int, ...]:
        """Leading (z, t, ...) indices of the slice shown, in ``layer``'s data coordinates."""
        layer = layer or self._require_image()
        nd = _spatial_ndim(layer)
        if nd == 2:
            return ()
        data_pos = np.asarray(layer.world_to_data(self.viewer.dims.point), float)[-nd:]
        shape = _spatial_shape(layer)
        return tuple(int(np.clip(np.round(data_pos[i]), 0, shape[i] - 1)) for i in range(nd - 2))

    def current_slice_image(self, layer=None, index: tuple[int, ...] | None = None) -> np.ndarray:
        """The 2D slice (H, W[, C]) the widget segments, as a numpy array."""
        layer = layer or self._require_image()
        index = self.current_index(layer) if index is None else index
        return np.asarray(_base_data(layer)[tuple(index)])

    def _ensure_prompts_layer(self, image_layer):
        """The "granseg prompts" Points layer matching ``image_layer`` (created on first use)."""
        import pandas as pd

        nd = _spatial_ndim(image_layer)
        pts = self.prompts_layer
        if pts is not None and (pts.ndim != nd or self._prompts_for is not image_layer):
            if pts.ndim != nd:
                self.viewer.layers.remove(pts)
                pts = None
            else:  # same dimensionality: reuse it, but start empty for the new image
                pts.data = np.empty((0, nd))
        if pts is None:
            pts = self.viewer.add_points(
                np.empty((0, nd)), ndim=nd, name=PROMPTS_NAME, size=max(4, min(_spatial_shape(image_layer)[-2:]) / 40),
                features=pd.DataFrame({"positive": pd.Series([], dtype=bool)}),
                feature_defaults={"positive": True}, face_color="#19e533", border_color="white",
                border_width=0.1, scale=image_layer.scale, translate=image_layer.translate)
            pts.events.data.connect(self._prompts_changed)
            pts.mouse_drag_callbacks.insert(0, self._on_prompt_press)
            self._bind_keys(pts)
            pts.mode = "add"
        self._prompts_for = image_layer
        return pts

    def _ensure_preview_layer(self, image_layer, hw: tuple[int, int]):
        layer = self.preview_layer
        scale, translate = image_layer.scale[-2:], image_layer.translate[-2:]
        if layer is None:
            from napari.utils.colormaps import DirectLabelColormap

            layer = self.viewer.add_labels(
                np.zeros(hw, np.uint8), name=PREVIEW_NAME, opacity=0.55, scale=scale, translate=translate,
                colormap=DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: "yellow"}))
            layer.editable = False
            # keep the prompts layer on top and active so clicks keep adding prompts
            if self.prompts_layer is not None:
                self.viewer.layers.move(self.viewer.layers.index(layer), self.viewer.layers.index(self.prompts_layer))
                self.viewer.layers.selection.active = self.prompts_layer
        else:
            layer.scale, layer.translate = scale, translate
        return layer

    def _image_changed(self) -> None:
        if self._building:
            return
        layer = self.image_layer
        self._clear_preview()
        if layer is not None and _spatial_ndim(layer) >= 2:
            self._ensure_prompts_layer(layer)
        self._update_stack_buttons()

    def _update_stack_buttons(self) -> None:
        layer = self.image_layer
        is_stack = layer is not None and _spatial_ndim(layer) >= 3
        self.embed_all_button.setEnabled(is_stack)
        self.propagate_button.setEnabled(is_stack)

    def _slice_changed(self, event=None) -> None:
        if self._preview is not None:
            req, _ = self._preview
            try:
                same = req.layer is self.image_layer and req.index == self.current_index(req.layer)
            except Exception:
                same = False
            if not same:
                self._clear_preview()
        self._schedule_preview()

    # ================================================================ prompts
    def _on_prompt_press(self, layer, event) -> None:
        """Runs before the add-mode callback: the sign of the point about to be added."""
        self._shift_at_press = "Shift" in event.modifiers
        positive = not (self._shift_at_press or self.negative_check.isChecked())
        layer.feature_defaults = {"positive": positive}

    def _negative_toggled(self, on: bool) -> None:
        pts = self.prompts_layer
        if pts is not None:
            pts.feature_defaults = {"positive": not on}

    def _prompts_changed(self, event=None) -> None:
        action = str(getattr(event, "action", "changed"))
        if action not in ("added", "removed", "changed"):
            return
        self._restyle_prompts()
        self._schedule_preview()

    def _restyle_prompts(self) -> None:
        pts = self.prompts_layer
        if pts is None or len(pts.data) == 0:
            return
        pos = self._positive_flags(pts)
        pts.face_color = np.where(pos[:, None], POSITIVE_COLOR, NEGATIVE_COLOR)
        pts.symbol = np.where(pos, "disc", "cross").tolist()

    @staticmethod
    def _positive_flags(pts) -> np.ndarray:
        if "positive" in pts.features and len(pts.features) == len(pts.data):
            return pts.features["positive"].to_numpy(dtype=bool)
        return np.ones(len(pts.data), bool)

    def add_prompt(self, point_rc: Sequence[float], positive: bool = True) -> None:
        """Add a click at ``(row, col)`` of the current slice (console/tests); the preview follows."""
        layer = self._require_image()
        pts = self._ensure_prompts_layer(layer)
        coords = list(self.current_index(layer)) + [float(point_rc[0]), float(point_rc[1])]
        pts.feature_defaults = {"positive": bool(positive)}
        pts.add(np.asarray([coords], float))
        pts.feature_defaults = {"positive": not self.negative_check.isChecked()}

    def _slice_prompts(self, layer, index: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) points and 1/0 labels of the prompts on slice ``index``; warns about outside points."""
        pts = self.prompts_layer
        if pts is None or len(pts.data) == 0 or self._prompts_for is not layer:
            return np.empty((0, 2), np.float32), np.empty(0, np.int32)
        data = np.asarray(pts.data, float)
        pos = self._positive_flags(pts)
        lead = len(index)
        on = np.all(np.round(data[:, :lead]) == np.asarray(index), axis=1) if lead else np.ones(len(data), bool)
        h, w = _spatial_shape(layer)[-2:]
        rows, cols = data[:, -2], data[:, -1]
        inside = (rows >= -0.5) & (rows <= h - 0.5) & (cols >= -0.5) & (cols <= w - 0.5)
        outside = on & ~inside
        if outside.any():
            self._notify("warning", f"{int(outside.sum())} prompt point(s) lie outside the image ({h} x {w}) and "
                                    f"are ignored: delete them (prompts layer, select mode S, then Delete)")
        keep = on & inside
        xy = np.stack([np.clip(cols[keep], 0, w - 1), np.clip(rows[keep], 0, h - 1)], axis=1).astype(np.float32)
        return xy, pos[keep].astype(np.int32)

    def _bind_keys(self, layer) -> None:
        actions = {
            "commit": lambda: self._guard(self.commit),
            "next_object": lambda: self._guard(self.next_object),
            "toggle_negative": lambda: self.negative_check.setChecked(not self.negative_check.isChecked()),
            "granularity_up": lambda: setattr(self, "granularity", self.granularity + G_STEP),
            "granularity_down": lambda: setattr(self, "granularity", self.granularity - G_STEP),
            "propagate": lambda: self._guard(self.propagate),
            "undo": lambda: self._guard(self.undo),
            "redo": lambda: self._guard(self.redo),
        }
        for key, action, _ in SHORTCUTS:
            if not action:
                continue
            napari_key = key.replace("+", "-")
            try:
                layer.bind_key(napari_key, lambda _layer, a=actions[action]: a(), overwrite=True)
            except Exception as exc:  # pragma: no cover - a key napari cannot parse: the button still works
                log.warning("could not bind %s: %s", key, exc)

    # ================================================================ preview
    def _schedule_preview(self) -> None:
        if not self._building:
            self._debounce.start()

    def _snapshot(self) -> PreviewRequest | None:
        layer = self.image_layer
        if layer is None or self.predictor is None or self._prompts_for is not layer:
            return None
        self._check_view()
        index = self.current_index(layer)
        xy, lab = self._slice_prompts(layer, index)
        if not (lab == 1).any():
            return None
        self._preview_serial += 1
        g = self.granularity if self.predictor.has_granularity else None
        return PreviewRequest(self._preview_serial, layer, index, self.current_slice_image(layer, index), xy, lab, g)

    def _request_preview(self) -> None:
        """Start a decoder run for the current prompts (or queue it behind the running one)."""
        if self._preview_task.running:
            self._preview_pending = True
            return
        self._preview_pending = False
        try:
            req = self._snapshot()
        except USER_ERRORS as exc:
            self._notify("error", str(exc))
            return
        if req is None:
            if self._preview is not None:
                self._clear_preview()
            return
        pred, lock = self.predictor, self._model_lock

        def job(is_cancelled):
            with lock:
                if not pred.is_cached(req.image):
                    where = f"slice {req.index}" if req.index else "the image"
                    yield Progress(0, 0, f"computing the embedding of {where}…")
                pred.set_image(req.image)
                masks, ious, _ = pred.predict(req.points_xy, req.point_labels, granularity=req.granularity)
            return req, masks[0], float(ious[0])

        self._preview_task.start(job, on_done=self._show_preview, message="")

    def _after_preview(self) -> None:
        if self._preview_pending:
            self._request_preview()

    def _show_preview(self, result) -> None:
        req, mask, iou = result
        if req.serial != self._preview_serial or req.layer is not self.image_layer:
            return  # stale: a newer request is on its way
        try:
            if req.index != self.current_index(req.layer):
                return
        except Exception:
            return
        self._display(req, mask)
        self.status.setText(f"preview: {int(mask.sum())} px at g={req.granularity} (predicted IoU {iou:.2f}); "
                            f"C commits")

    def _display(self, req: PreviewRequest, mask: np.ndarray) -> None:
        preview = self._ensure_preview_layer(req.layer, mask.shape)
        preview.data = mask.astype(np.uint8)
        self._preview = (req, mask)
        self.preview_updated.emit()

    def _clear_preview(self) -> None:
        self._preview = None
        layer = self.preview_layer
        if layer is not None and layer.data.any():
            layer.data = np.zeros_like(layer.data)
        self.preview_updated.emit()

    @property
    def preview_mask(self) -> np.ndarray | None:
        """The current preview (H, W) bool mask, or None."""
        return None if self._preview is None else self._preview[1]

    def segment_points(self, points_rc: Sequence[Sequence[float]], granularity: float | None = None,
                       labels: Sequence[int] | None = None, layer=None, index: tuple[int, ...] | None = None,
                       show: bool = True) -> np.ndarray:
        """Segment one object from ``[(row, col), ...]`` on the current slice, synchronously (console).

        labels: 1/0 per point (default all positive). granularity: default the slider's value.
        show: also display it as the preview, so ``commit()`` writes it. Returns the (H, W) bool mask.
        """
        pred = self._require_model()
        layer = layer or self._require_image()
        index = self.current_index(layer) if index is None else tuple(index)
        image = self.current_slice_image(layer, index)
        pts = np.asarray(points_rc, np.float32).reshape(-1, 2)
        lab = np.ones(len(pts), np.int32) if labels is None else np.asarray(labels, np.int32).reshape(-1)
        g = (self.granularity if granularity is None else float(granularity)) if pred.has_granularity else None
        with self._model_lock:
            pred.set_image(image)
            masks, _, _ = pred.predict(pts[:, ::-1].copy(), lab, granularity=g)
        if show:
            self._preview_serial += 1
            req = PreviewRequest(self._preview_serial, layer, index, image, pts[:, ::-1].copy(), lab, g)
            self._display(req, masks[0])
        return masks[0]

    # ================================================================ commit / undo
    def _target_labels(self, image_layer):
        labels = self.labels_layer
        shape = _spatial_shape(image_layer)
        if labels is None:
            if LABELS_NAME in self.viewer.layers:
                labels = self.viewer.layers[LABELS_NAME]
            else:
                labels = self.viewer.add_labels(np.zeros(shape, np.int32), name=LABELS_NAME,
                                                scale=image_layer.scale, translate=image_layer.translate)
                self.viewer.layers.move(self.viewer.layers.index(labels), self.viewer.layers.index(self.prompts_layer)
                                        if self.prompts_layer is not None else len(self.viewer.layers))
            self._refresh_layer_choices()
            self.labels_combo.setCurrentText(labels.name)
        if tuple(labels.data.shape) != shape:
            raise WidgetError(f"labels layer {labels.name!r} has shape {tuple(labels.data.shape)} but image "
                              f"{image_layer.name!r} has {shape}: pick another Labels layer or '{NEW_LABELS_ITEM}'")
        if self.prompts_layer is not None:
            self.viewer.layers.selection.active = self.prompts_layer
        return labels

    def commit(self) -> int | None:
        """Write the preview into the target Labels layer as a new id; returns the id (None if nothing)."""
        if self._preview is None:
            raise WidgetError("nothing to commit: click on an object first (prompts layer in add mode) and wait "
                              "for the yellow preview")
        req, mask = self._preview
        labels = self._target_labels(req.layer)
        data = labels.data
        region = np.asarray(data[req.index]) if req.index else np.asarray(data)
        free = mask & (region == 0)
        if not free.any():
            raise WidgetError("this object is already labelled (commit writes only on background pixels): click "
                              "another object, or change the granularity")
        new_id = int(np.max(data)) + 1
        if new_id > np.iinfo(data.dtype).max:
            raise WidgetError(f"labels layer {labels.name!r} ({data.dtype}) cannot hold label {new_id}: convert it "
                              f"with layer.data = layer.data.astype('int32')")
        rr, cc = np.nonzero(free)
        indices = tuple(np.full(rr.shape, i, np.intp) for i in req.index) + (rr, cc)
        labels.data_setitem(indices, new_id)
        labels.selected_label = new_id
        self.last_commit = CommitRecord(req.layer, labels, new_id, req.index, req.points_xy, req.point_labels,
                                        req.granularity, int(free.sum()))
        self.status.setText(f"committed label {new_id} ({int(free.sum())} px); Ctrl+Z undoes it")
        self.next_object()
        self.committed.emit(new_id)
        return new_id

    def next_object(self) -> None:
        """Start a new object: remove the clicks of the current slice and the preview (nothing is written)."""
        pts = self.prompts_layer
        if pts is not None and len(pts.data):
            layer = self._prompts_for
            if layer is not None and _spatial_ndim(layer) > 2:
                index = np.asarray(self.current_index(layer))
                data = np.asarray(pts.data)
                on = np.all(np.round(data[:, :len(index)]) == index, axis=1)
                keep = ~on
            else:
                keep = np.zeros(len(pts.data), bool)
            if not keep.all():
                pts.selected_data = set(np.nonzero(~keep)[0].tolist())
                pts.remove_selected()
        self._clear_preview()

    def undo(self) -> None:
        """Undo the last edit of the target Labels layer (napari's own history)."""
        labels = self.labels_layer
        if labels is None:
            raise WidgetError("nothing to undo: no labels layer yet")
        labels.undo()
        self.viewer.layers.selection.active = self.prompts_layer or labels

    def redo(self) -> None:
        labels = self.labels_layer
        if labels is not None:
            labels.redo()

    # ================================================================ stacks
    def _stack_of(self, layer) -> np.ndarray:
        nd = _spatial_ndim(layer)
        if nd < 3:
            raise WidgetError(f"{layer.name!r} is a single 2D image; embedding all slices and propagation are "
                              f"for z-stacks and time series (3D layers)")
        if nd > 3:
            raise WidgetError(f"{layer.name!r} has {nd} spatial/time axes {_spatial_shape(layer)} "
                              f"{'(RGB) ' if layer.rgb else ''}but propagation runs along one axis (z or t): add "
                              f"one time point or one z as its own layer, e.g. viewer.add_image(layer.data[t])")
        return _base_data(layer)

    def embed_all_slices(self) -> None:
        """Compute (and cache) the embeddings of all slices in the background, nearest to the current first."""
        pred = self._require_model()
        layer = self._require_image()
        stack = self._stack_of(layer)
        if self._task.running:
            raise WidgetError("another task is running: wait for it or press Cancel")
        n = int(stack.shape[0])
        current = self.current_index(layer)[0]
        order = sorted(range(n), key=lambda i: (abs(i - current), i))
        s = int(pred.model.image_size)
        per_slice = 4 * (256 * (s // 16) ** 2 + 64 * (s // 8) ** 2 + 32 * (s // 4) ** 2)  # hiera feature sizes
        capacity = max(1, min(n, EMBED_BUDGET_BYTES // per_slice))
        if capacity < n:
            self._notify("warning", f"embedding the {capacity} slices nearest to slice {current} of {n} "
                                    f"(memory budget {EMBED_BUDGET_BYTES >> 20} MB); others are embedded on first use")
        order = order[:capacity]
        pred.cache.max_items = max(pred.cache.max_items, capacity)
        lock = self._model_lock

        def job(is_cancelled):
            done = 0
            for i in order:
                if is_cancelled():
                    return done
                image = np.asarray(stack[i])
                with lock:
                    pred.set_image(image)
                done += 1
                yield Progress(done, len(order), f"embedded slice {i} ({done}/{len(order)})")
            return done

        def finished(count):
            self.status.setText(f"{count} slice embeddings cached: clicks on them only run the decoder")
            self.embedded.emit(int(count))

        self._task.start(job, on_done=finished, message=f"embedding {len(order)} slices…")

    def propagate(self) -> None:
        """Propagate the last committed object through the stack (background; writes the same label id)."""
        from ..engine.propagate import ObjectPrompt, propagate

        self._require_model()
        rec = self.last_commit
        if rec is None:
            raise WidgetError("nothing to propagate: segment an object on one slice and commit it (C) first")
        if rec.image_layer not in self.viewer.layers or rec.labels_layer not in self.viewer.layers:
            raise WidgetError("the layers of the last commit were removed: commit an object again")
        stack = self._stack_of(rec.image_layer)
        if self._task.running:
            raise WidgetError("another task is running: wait for it or press Cancel")
        model, lock = self.model, self._model_lock
        prompt = ObjectPrompt(frame=rec.index[0], points=rec.points_xy.tolist(), labels=rec.point_labels.tolist(),
                              obj_id=rec.label_id, granularity=rec.granularity)

        def job(is_cancelled):
            def call(progress, cancel):
                with lock:
                    return propagate(model, np.asarray(stack), prompt, progress=progress, cancel=cancel)
            result = yield from blocking_with_progress(call, is_cancelled)
            return result

        self._task.start(job, on_done=lambda result: self._write_propagation(rec, result),
                         message=f"propagating label {rec.label_id} through {stack.shape[0]} slices…")

    def _write_propagation(self, rec: CommitRecord, result: np.ndarray) -> None:
        labels = rec.labels_layer
        data = labels.data
        write = (result == rec.label_id) & (np.asarray(data) == 0)
        write[rec.index[0]] = False  # the committed slice stays as committed
        if not write.any():
            self._notify("warning", f"propagation found label {rec.label_id} on no other slice; try another "
                                    f"granularity or more clicks")
            self.propagated.emit(0)
            return
        indices = np.nonzero(write)
        labels.data_setitem(indices, rec.label_id)
        n = int(np.unique(indices[0]).size)
        self.status.setText(f"label {rec.label_id} propagated into {n} more slices; Ctrl+Z undoes it")
        self.propagated.emit(n)

    # ================================================================ console
    @property
    def busy(self) -> bool:
        """True while a model load, embedding, propagation or preview runs in the background."""
        return self._task.running or self._preview_task.running or self._debounce.isActive()

    @property
    def state(self) -> dict:
        """A summary of the widget's state (for the console)."""
        layer = self.image_layer
        try:
            index = self.current_index(layer) if layer is not None else None
        except Exception:
            index = None
        pts = self.prompts_layer
        return {
            "image": None if layer is None else layer.name,
            "slice": index,
            "granularity": self.granularity,
            "prompts": 0 if pts is None else int(len(pts.data)),
            "preview_pixels": None if self._preview is None else int(self._preview[1].sum()),
            "labels": None if self.labels_layer is None else self.labels_layer.name,
            "model": None if self.model is None else repr(self.model),
            "last_commit": None if self.last_commit is None else
            {"label": self.last_commit.label_id, "slice": self.last_commit.index,
             "granularity": self.last_commit.granularity},
            "busy": self.busy,
        }

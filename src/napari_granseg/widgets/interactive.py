"""The interactive dock widget: click an object, slide the granularity, commit it as a label; stacks too.

How it works (see docs/widgets.md for the user's side):

- Prompts live in two layers the widget creates for its image (:mod:`._prompt_layers`): clicks in the Points
  layer "granseg prompts" (Shift+click or the negative toggle: negative), boxes and scribbles in the Shapes
  layer "granseg boxes and scribbles". Whatever the order in which the image and the widget were opened, the
  widget makes the right prompt layer active in its add mode, so the next canvas click is a prompt.
- Only the prompts on the slice shown count: on a z-stack or time series the widget segments that slice,
  with the stack's intensity range.
- The preview is a state machine (:mod:`._preview`): debounced requests, one background run at a time, stale
  results dropped. After a click the worker also decodes a sweep of g values, so the slider shows the nearest
  mask at once and the exact one when it rests. A commit right after a click waits for the preview of that
  click; it never writes an older mask.
- Commit, refine, propagation and the stack actions write through :mod:`._stack_actions`: background pixels
  only, one undo step each (Ctrl+Z in the labels layer, or Undo).

Console: ``dock, w = viewer.window.add_plugin_dock_widget("napari-granseg", "Interactive (UnSAMv2)")``,
then ``w.model = gs.load_model(...)``, ``w.predictor``, ``w.segment_points([(row, col)], granularity=0.3)``,
``w.commit()``, ``w.state``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QWidget

from ._compute import compute_error_text, is_compute_error
from ._common import WidgetError, notify, notify_error, start_describe_models
from ._napari_warmup import start_warmup
from ._dock_ui import G_STEP, SHORTCUTS, build_ui, shortcuts_text
from ._model_binding import ModelBinding
from ._image_binding import LABELS_NAME, NEW_LABELS_ITEM, PREVIEW_NAME, ImageBinding
from ._preview import PreviewController
from ._preview_glue import PreviewGlue
from ._prompt_layers import POINTS_NAME, PromptLayers, spatial_shape, unwrap
from ._stack_actions import StackActions, write_object
from ._tasks import BackgroundTask
from .recovery_hooks import RestoreOffer, record_write

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from ..models.loaded import LoadedModel

__all__ = ["InteractiveWidget", "WidgetError", "SHORTCUTS", "shortcuts_text"]

log = logging.getLogger(__name__)

PROMPTS_NAME = POINTS_NAME
DEBOUNCE_MS = 80


@dataclass
class CommitRecord:
    """What the last commit wrote, for propagation and the console."""

    image_name: str
    labels_name: str
    label_id: int
    index: tuple[int, ...]
    points_xy: np.ndarray
    point_labels: np.ndarray
    granularity: float | None
    box: np.ndarray | None = None
    n_pixels: int = 0


class InteractiveWidget(ModelBinding, ImageBinding, PreviewGlue, StackActions, QWidget):
    """Dock widget for interactive UnSAMv2 segmentation at any granularity (see the module docstring)."""

    preview_updated = Signal()      # a new preview is shown (or cleared)
    committed = Signal(int)         # the new label id
    propagated = Signal(int)        # number of slices the object was written into
    model_changed = Signal()
    embedded = Signal(int)          # number of slices embedded by "Embed all slices"
    error_type = WidgetError

    def __init__(self, napari_viewer: "napari.viewer.Viewer", model: "LoadedModel | None" = None,
                 load_default: bool = True):
        super().__init__()
        self.viewer = napari_viewer
        self._model: LoadedModel | None = None
        self.predictor = None
        self.last_commit: CommitRecord | None = None
        self.last_message: tuple[str, str] | None = None
        self._last_action = ""
        self._intensity: dict[tuple, tuple[float, float]] = {}
        self._blank: np.ndarray | None = None
        self._model_serial = 0
        self._building = False  # a predictor is being built in a worker (see set_model)
        self._when_layers_ready: list[Callable[[], Any]] = []  # run once the image's layers exist (or no image)
        self._layer_step_pending = False  # see ImageBinding._image_changed
        self._warmed_up = False  # napari's first-layer imports done in a worker (see _napari_warmup)
        self.setWindowTitle("Interactive (UnSAMv2)")
        build_ui(self)
        self.layout().addWidget(RestoreOffer(self.viewer, say=lambda text: self._say_restored(text)))
        self._task = BackgroundTask(self.progress, self.cancel_button, self.status, context="GranSeg")
        self._preview_task = BackgroundTask(self.preview_busy, None, None, context="GranSeg preview")
        self._task.on_any_finished(self._refresh)
        self._task.on_any_finished(self._load_if_pending)
        self._pending_load = False  # the compute changed while a task ran: load the model there afterwards
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self.preview = PreviewController(self._debounce, self._snapshot, self._launch, self._show, self._clear,
                                         commit=lambda: self._guard(self._write_commit),
                                         cancel_commit=lambda why: self._notify("warning", why))
        self._debounce.timeout.connect(self.preview.fire)
        self._debounce.timeout.connect(self._refresh)  # the status must not keep saying "computing"
        self._preview_task.on_any_finished(self.preview.run_finished)
        self._preview_task.on_any_finished(self._refresh)
        self.prompts = PromptLayers(self.viewer, self._prompts_changed, self._bind_keys,
                                    self.negative_check.isChecked, lambda fn: QTimer.singleShot(0, fn))
        self._connect()
        self._refresh_layer_choices()
        if model is not None:
            self.set_model(model)
        elif load_default:  # after the layers: the model's import then does not compete with their creation
            self._when_layers_ready.append(
                lambda: self._model is None and not self._task.running and self._load_clicked())
        self._when_layers_ready.append(  # the zoo imports torch: not on the GUI thread
            lambda: start_describe_models("unsamv2", self._models_listed))
        # napari's first-layer imports in a worker, then the layers (also when the image was there before the
        # widget), then the model
        start_warmup(self._warmup_done)
        self._refresh()

    def _warmup_done(self) -> None:
        self._warmed_up = True
        self._image_changed()

    def _connect(self) -> None:
        layers = self.viewer.layers
        layers.events.inserted.connect(self._layer_inserted)
        layers.events.removed.connect(self._layer_removed)
        layers.selection.events.active.connect(lambda _e=None: self._refresh())
        self.viewer.dims.events.current_step.connect(self._slice_changed)
        self.load_button.clicked.connect(self._load_clicked)
        self.cancel_button.clicked.connect(lambda: setattr(self, "_last_action", "cancelled, nothing was written"))
        self.precision_combo.currentTextChanged.connect(lambda _t: self._rebuild_predictor())
        self.granularity_slider.valueChanged.connect(self._g_changed)
        self.commit_button.clicked.connect(lambda: self._guard(self.commit))
        self.next_button.clicked.connect(lambda: self._guard(self.next_object))
        self.undo_button.clicked.connect(lambda: self._guard(self.undo))
        self.run_button.clicked.connect(lambda: self._guard(self.run_prompts))
        self.embed_all_button.clicked.connect(lambda: self._guard(self.embed_all_slices))
        self.propagate_button.clicked.connect(lambda: self._guard(self.propagate))
        self.negative_check.toggled.connect(lambda _on: self.prompts.sync_sign())
        self.image_combo.currentIndexChanged.connect(lambda _i: self._image_changed())
        self.image_combo.activated.connect(lambda _i: self._image_changed())  # also re-picking the same one
        self.labels_combo.currentIndexChanged.connect(lambda _i: self._refresh())
        for signal in (self.scale_combo.currentTextChanged, self.tile_spin.valueChanged,
                       self.channels_combo.currentTextChanged):
            signal.connect(lambda _v=None: self._view_changed())
        for mode, button in self.mode_buttons.items():
            button.clicked.connect(lambda _c=False, m=mode: self._guard(lambda: self.set_mode(m)))

    def _say_restored(self, text: str) -> None:
        self._last_action = text
        self._refresh()

    # ================================================================ notifications and errors
    def _notify(self, level: str, message: str) -> None:
        """Show a napari notification and keep it in ``last_message`` (tests, console)."""
        self.last_message = (level, message)
        notify(level, message)

    def _report(self, exc: BaseException) -> None:
        """A user mistake becomes its message; a refused address or a lost worker too (also in the status
        line); anything else is a bug: logged with its traceback (:func:`._common.notify_error`)."""
        if is_compute_error(exc):
            self._last_action = compute_error_text(exc)
            self._notify("error", self._last_action)
            self._refresh()
            return
        self.last_message = ("error", notify_error(exc))

    def _guard(self, fn: Callable[[], Any]) -> Any:
        """Run a GUI action; errors become notifications (see :meth:`_report`)."""
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - reported
            self._report(exc)
        finally:
            self._refresh()
        return None

    # ================================================================ prompts and modes
    def set_mode(self, mode: str) -> None:
        """Pointer mode: "click" (points), "box" (drag a rectangle) or "scribble" (draw a line over the object)."""
        self._require_image()
        self.prompts.activate(mode)
        for m, b in self.mode_buttons.items():
            b.setChecked(m == mode)

    def _view_changed(self) -> None:
        """Scale, tile or channels changed: the shown preview no longer matches what the model sees."""
        self.preview.invalidate()
        if self.prompts.count():
            self.preview.schedule()
        self._refresh()

    def _prompts_changed(self) -> None:
        if self.live_check.isChecked():
            self.preview.schedule()
        self._refresh()

    def add_prompt(self, point_rc: Sequence[float], positive: bool = True) -> None:
        """Add a click at ``(row, col)`` of the current slice (console/tests); the preview follows."""
        layer = self._require_image()
        if self.prompts.image_name != layer.name or self.prompts.points is None:
            self._image_changed(gradual=False)
        self.prompts.add_point(list(self.current_index(layer)) + [float(point_rc[0]), float(point_rc[1])], positive)

    def run_prompts(self) -> None:
        """Preview all prompts placed so far (when the live preview is off, prompts wait for this)."""
        self._require_model()
        self.preview.schedule()

    def _g_changed(self, _value=None) -> None:
        self.preview.quick_show(self.granularity)
        self.preview.schedule()

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
            "run": lambda: self._guard(self.run_prompts),
            "mode_click": lambda: self._guard(lambda: self.set_mode("click")),
            "mode_box": lambda: self._guard(lambda: self.set_mode("box")),
            "mode_scribble": lambda: self._guard(lambda: self.set_mode("scribble")),
        }
        for key, action, _ in SHORTCUTS:
            if action:
                try:
                    layer.bind_key(key.replace("+", "-"), lambda _l, a=actions[action]: a(), overwrite=True)
                except Exception as exc:  # pragma: no cover - a key napari cannot parse: the button still works
                    log.warning("could not bind %s: %s", key, exc)

    # ================================================================ commit / undo
    def _target_labels(self, image_layer, index: tuple[int, ...] | None = None):
        labels = self.labels_layer
        shape = spatial_shape(image_layer)
        if index == () and len(shape) > 2:  # channels of a (C, H, W) layer: one 2D image
            shape = shape[-2:]
        if labels is None:
            if LABELS_NAME in self.viewer.layers:
                labels = self.viewer.layers[LABELS_NAME]
            else:
                nd = len(shape)
                labels = self.viewer.add_labels(np.zeros(shape, np.int32), name=LABELS_NAME,
                                                scale=image_layer.scale[-nd:], translate=image_layer.translate[-nd:])
                self.viewer.layers.move(self.viewer.layers.index(labels), self.viewer.layers.index(PREVIEW_NAME)
                                        if PREVIEW_NAME in self.viewer.layers else len(self.viewer.layers))
            self._refresh_layer_choices()
            self.labels_combo.setCurrentText(labels.name)
            labels.events.data.connect(lambda _e=None: self._refresh())
        if tuple(labels.data.shape) != shape:
            raise WidgetError(f"labels layer {labels.name!r} has shape {tuple(labels.data.shape)} but image "
                              f"{image_layer.name!r} has {shape}: pick another Labels layer or '{NEW_LABELS_ITEM}'")
        return labels

    def commit(self) -> int | None:
        """Write the preview as a new label (or the refined label); waits for a preview still being computed.

        Returns the label id, or None when the commit will happen as soon as the pending preview arrives.
        """
        if self.preview.shown is None and not self.prompts.count():
            raise WidgetError("nothing to commit: click on an object first (prompts layer in add mode) and wait "
                              "for the yellow preview")
        if self.preview.commit_when_ready():
            return self._write_commit()
        self._last_action = "committing as soon as the preview of the latest prompts is ready…"
        return None

    def _write_commit(self) -> int:
        shown = self.preview.shown
        req = shown.request
        if req.image_name not in self.viewer.layers:
            raise WidgetError("the image of this preview was removed: click an object again")
        labels = self._target_labels(self.viewer.layers[req.image_name], req.index)
        label_id, n = write_object(labels, req.index, shown.mask.view(bool), req.refine_label, WidgetError)
        record_write(req.image_name, labels, req.index, None if req.refine_label else shown.mask,
                     "interactive refine" if req.refine_label else "interactive commit", self.viewer)
        self.last_commit = CommitRecord(req.image_name, labels.name, label_id, req.index, req.points_xy,
                                        req.point_labels, req.granularity, req.box, n)
        self.next_object()
        self._last_action = f"{'refined' if req.refine_label else 'committed'} label {label_id} ({n} px)"
        self.prompts.activate()
        self.committed.emit(label_id)
        return label_id

    def next_object(self) -> None:
        """Start a new object: remove the prompts of the current slice and the preview (nothing is written)."""
        layer = self.image_layer
        if layer is not None and self.prompts.image_name == layer.name:
            self.preview.invalidate()   # first: the prompt removal below must not schedule a preview
            self.prompts.clear_slice(self.current_index(layer))
            self._debounce.stop()
        self.preview.invalidate()
        self._last_action = ""

    def _can_undo(self) -> bool:
        labels = self.labels_layer
        return labels is not None and bool(len(getattr(unwrap(labels), "_undo_history", ())))

    def undo(self) -> None:
        """Undo the last edit of the target Labels layer (napari's own history)."""
        labels = self.labels_layer
        if labels is None or not self._can_undo():
            raise WidgetError("nothing to undo in the target labels layer")
        labels.undo()
        record_write(self.image_layer, labels, (), None, "undo")
        self._last_action = "undone"
        self.prompts.activate()

    def redo(self) -> None:
        labels = self.labels_layer
        if labels is not None:
            labels.redo()
            record_write(self.image_layer, labels, (), None, "redo")

    # ================================================================ status and buttons
    def _next_step(self) -> str:
        if self.predictor is None:
            if self.compute.connecting:
                return "connecting…"
            return ("loading the model…" if self._task.running or self._building
                    else "no model: pick one and press Load")
        layer = self.image_layer
        if layer is None:
            return "open an image (File > Open, or File > Open Sample > napari-granseg)"
        if self.preview.want_commit or self.preview.busy:
            return "computing the preview…"
        if not self.prompts.is_active():
            active = self.viewer.layers.selection.active
            where = f"clicks now go to layer {active.name!r}" if active is not None else "no layer is selected"
            return f"{where}: press Click, Box or Scribble (or select '{POINTS_NAME}') to segment by clicking"
        if self.preview.shown is not None:
            refine = self.preview.shown.request.refine_label
            return (f"C replaces label {refine}" if refine else "C commits it as a new label") + ", N discards it"
        if self.prompts.count() and not self.live_check.isChecked():
            return "add more prompts, then press Run (R)"
        return {"click": "click an object (Shift+click: negative)", "box": "drag a box around an object",
                "scribble": "draw a line over an object"}[self.prompts.mode]

    def _refresh(self) -> None:
        """Status line (always the true next step) and which buttons can act."""
        try:
            has_model, layer = self.predictor is not None, self.image_layer
            is_stack = layer is not None and int(layer.ndim) == 3
            idle = not self._task.running
            pending = self.preview.busy and bool(self.prompts.count())
            self.commit_button.setEnabled(has_model and (self.preview.shown is not None or pending))
            self.next_button.setEnabled(bool(self.prompts.count()) or self.preview.shown is not None)
            self.undo_button.setEnabled(self._can_undo())
            self.run_button.setEnabled(has_model and bool(self.prompts.count()))
            tiled = has_model and layer is not None and int(layer.ndim) == 2 and bool(
                self.tile_for(spatial_shape(layer)))
            self.embed_all_button.setEnabled(has_model and idle and (is_stack or tiled))
            self.propagate_button.setEnabled(has_model and idle and self.last_commit is not None
                                             and len(self.last_commit.index) == 1)
            self.load_button.setEnabled(idle)
            if self._task.running:
                return  # the task's progress message stays
            action = self._last_action
            if action and self._can_undo() and not action.startswith(("preview", "undone", "computing")):
                action += "; Ctrl+Z undoes it"
            self.status.setText(f"{action}. Next: {self._next_step()}" if action else self._next_step())
        except RuntimeError:  # pragma: no cover - the widget was closed while an event was queued
            pass

    # ================================================================ console
    @property
    def busy(self) -> bool:
        """True while a model load, embedding, propagation or preview runs in the background."""
        return (self._task.running or self._building or self.compute.connecting or self._preview_task.running
                or self.preview.busy)

    @property
    def state(self) -> dict:
        """A summary of the widget's state (for the console)."""
        layer, shown = self.image_layer, self.preview.shown
        return {
            "image": None if layer is None else layer.name,
            "slice": None if layer is None else self.current_index(layer),
            "granularity": self.granularity,
            "mode": self.prompts.mode,
            "prompts": self.prompts.count(),
            "preview_pixels": None if shown is None else int(np.count_nonzero(shown.mask)),
            "labels": None if self.labels_layer is None else self.labels_layer.name,
            "model": None if self._model is None else repr(self._model),
            "last_commit": None if self.last_commit is None else
            {"label": self.last_commit.label_id, "slice": self.last_commit.index,
             "granularity": self.last_commit.granularity},
            "busy": self.busy,
        }

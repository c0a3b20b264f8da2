"""The interactive dock widget: the controls, wired to an :class:`~.session.InteractiveSession`.

Why thin: the session holds every rule and every piece of state; this QWidget builds the controls
(:mod:`.controls`), turns a person's actions into session calls, follows napari's layer events, and renders
each published :class:`~.state.SessionState` (status, buttons, slider, model line, notifications). It never
sets a session attribute. Background work runs in napari thread workers (``widgets._tasks.BackgroundTask``),
the preview's debounce is a ``QTimer``, layers are written through :class:`~.layers.NapariLayers`.

Layers follow the person in every order: a new image becomes the widget's image, and its prompt and preview
layers are added one at a time (napari's ``add_*`` of one layer already freezes the viewer 130-300 ms on a
laptop CPU; ``LAYER_SPACING_MS`` lets it draw in between), after napari's first-layer imports ran in a worker.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QWidget

from .._common import LAYER_SPACING_MS, WidgetError, notify, start_describe_models
from .._napari_warmup import start_warmup
from .._tasks import BackgroundTask
from ..recovery_hooks import RestoreOffer
from .controls import build_ui
from .shortcuts import G_STEP, SHORTCUTS
from .layers import LABELS_NAME, NEW_LABELS_ITEM, NapariLayers
from .session import InteractiveSession
from .state import SessionState

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from ...models.loaded import LoadedModel

__all__ = ["InteractiveWidget"]

log = logging.getLogger(__name__)

DEBOUNCE_MS = 80
_SIGNAL_OF_EVENT = {"preview": "preview_updated", "committed": "committed", "propagated": "propagated",
                    "embedded": "embedded", "model": "model_changed"}


class InteractiveWidget(QWidget):
    """Dock widget for interactive UnSAMv2 segmentation at any granularity (see the package docstring)."""

    preview_updated = Signal()      # a new preview is shown (or cleared)
    committed = Signal(int)         # the new label id
    propagated = Signal(int)        # number of slices the object was written into
    model_changed = Signal()
    embedded = Signal(int)          # number of slices (or tiles) embedded by "Embed all"
    error_type = WidgetError

    def __init__(self, napari_viewer: "napari.viewer.Viewer", model: "LoadedModel | None" = None,
                 load_default: bool = True):
        super().__init__()
        self.viewer = napari_viewer
        self._when_layers_ready: list[Callable[[], Any]] = []  # run once the image's layers exist (or no image)
        self._layer_step_pending = False
        self._warmed_up = False  # napari's first-layer imports done in a worker (see _napari_warmup)
        self.setWindowTitle("Interactive (UnSAMv2)")
        build_ui(self)
        self.layers = NapariLayers(self.viewer, self._bind_keys, self.negative_check.isChecked,
                                   lambda fn: QTimer.singleShot(0, fn))
        self.session = InteractiveSession(
            self.layers, task_runner=BackgroundTask(self.progress, self.cancel_button, self.status, "GranSeg"),
            preview_runner=BackgroundTask(self.preview_busy, None, None, context="GranSeg preview"),
            model_runner=BackgroundTask(context="GranSeg model"), debounce=self._debounce)
        self.prompts = self.layers.prompts
        self.session.changed.connect(self._render)
        # labels a gone napari left over an open image: "Restore ..." (the status line says what came back)
        self.restore_offer = RestoreOffer(self.viewer, say=self.session.refresh)
        self.layout().insertWidget(self.layout().indexOf(self.status) + 1, self.restore_offer)
        self._connect()
        self._refresh_layer_choices()
        if model is not None:
            self.model = model
        elif load_default:  # after the layers: the model's import then does not compete with their creation
            self._when_layers_ready.append(
                lambda: self.session.models.state.phase == "idle" and self._load_clicked())
        self._when_layers_ready.append(  # the zoo imports torch: not on the GUI thread
            lambda: start_describe_models("unsamv2", self._models_listed))
        start_warmup(self._warmup_done)
        self._render(self.session.state)

    def _debounce(self, fire: Callable[[], None]) -> QTimer:
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(DEBOUNCE_MS)
        timer.timeout.connect(fire)
        return timer

    def _connect(self) -> None:
        s, layers = self.session, self.viewer.layers
        layers.events.inserted.connect(self._layer_inserted)
        layers.events.removed.connect(self._layer_removed)
        layers.selection.events.active.connect(lambda _e=None: s.refresh())
        self.viewer.dims.events.current_step.connect(lambda _e=None: s.guard(s.slice_changed))
        self.load_button.clicked.connect(self._load_clicked)
        self.cancel_button.clicked.connect(s.cancel)
        self.precision_combo.currentTextChanged.connect(lambda t: s.guard(lambda: s.set_precision(t)))
        self.granularity_slider.valueChanged.connect(lambda v: s.guard(lambda: s.set_granularity(v)))
        self.commit_button.clicked.connect(lambda: self._guard(self.commit))
        self.next_button.clicked.connect(lambda: self._guard(self.next_object))
        self.undo_button.clicked.connect(lambda: self._guard(self.undo))
        self.run_button.clicked.connect(lambda: self._guard(s.run_prompts))
        self.embed_all_button.clicked.connect(lambda: self._guard(s.embed_all))
        self.propagate_button.clicked.connect(lambda: self._guard(s.propagate))
        self.negative_check.toggled.connect(self._negative_toggled)
        self.live_check.toggled.connect(lambda on: s.set_options(live=bool(on)))
        self.refine_check.toggled.connect(lambda on: s.set_options(refine=bool(on)))
        self.image_combo.currentIndexChanged.connect(lambda _i: self._image_changed())
        self.image_combo.activated.connect(lambda _i: self._image_changed())  # also re-picking the same one
        self.labels_combo.currentIndexChanged.connect(lambda _i: s.set_labels(self._labels_choice()))
        for signal in (self.scale_combo.currentTextChanged, self.tile_spin.valueChanged):
            signal.connect(lambda _v=None: s.guard(
                lambda: s.set_scale(self.scale_combo.currentText(), int(self.tile_spin.value()))))
        self.channels_combo.currentTextChanged.connect(lambda t: t and s.guard(lambda: s.set_channels(t)))
        for mode, button in self.mode_buttons.items():
            button.clicked.connect(lambda _c=False, m=mode: self._guard(lambda: self.set_mode(m)))

    def _bind_keys(self, layer) -> None:
        s = self.session
        actions = {
            "commit": lambda: self._guard(self.commit),
            "next_object": lambda: self._guard(self.next_object),
            "toggle_negative": lambda: self.negative_check.setChecked(not self.negative_check.isChecked()),
            "granularity_up": lambda: setattr(self, "granularity", self.granularity + G_STEP),
            "granularity_down": lambda: setattr(self, "granularity", self.granularity - G_STEP),
            "propagate": lambda: self._guard(s.propagate),
            "undo": lambda: self._guard(self.undo),
            "redo": lambda: self._guard(s.redo),
            "run": lambda: self._guard(s.run_prompts),
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

    def _negative_toggled(self, on: bool) -> None:
        self.session.set_options(negative=bool(on))
        self.prompts.sync_sign()

    def _guard(self, fn: Callable[[], Any]) -> Any:
        return self.session.guard(fn)

    # ================================================================ model and compute
    def _models_listed(self, described) -> None:
        names, default, _demo = described
        typed = self.model_combo.currentText()
        self.model_combo.clear()
        self.model_combo.addItems(names)
        self.model_combo.setCurrentText(typed or default)

    def _load_clicked(self) -> None:
        self._guard(lambda: self.load_model(self.model_combo.currentText().strip() or None,
                                            self.device_combo.currentText()))

    def load_model(self, name_or_path: str | None = None, device: str = "auto") -> None:
        """Load a model (and build its predictor) in a thread worker, here or on the compute's worker."""
        self.session.load(name_or_path, device, self.compute.session)

    def _compute_changed(self, where) -> None:
        self.session.switch_compute(where, self.model_combo.currentText().strip() or None,
                                    self.device_combo.currentText())

    def _compute_failed(self, message: str) -> None:
        self.session.report_text(message)

    @property
    def model(self) -> "LoadedModel | None":
        return self.session.models.state.model

    @model.setter
    def model(self, loaded: "LoadedModel") -> None:
        self.set_model(loaded)

    def set_model(self, loaded: "LoadedModel", predictor=None) -> None:
        """Use ``loaded`` (a LoadedModel from ``gs.load_model``) with a fresh predictor at the chosen precision."""
        self.session.use_model(loaded, predictor)

    @property
    def predictor(self):
        return self.session.predictor

    # ================================================================ images and layers
    def _warmup_done(self) -> None:
        self._warmed_up = True
        self._image_changed()

    def _layer_inserted(self, event=None) -> None:
        from napari.layers import Image, Labels

        from .prompt_layers import unwrap

        new = getattr(event, "value", None)
        if isinstance(unwrap(new), Labels) and not self.layers.own(new.name):  # painting changes what Undo can do
            new.events.data.connect(lambda _e=None: self.session.refresh())
        self._refresh_layer_choices()
        if isinstance(unwrap(new), Image):  # a new image becomes the widget's image (the newest wins)
            self.image_combo.setCurrentText(new.name)
            QTimer.singleShot(0, self._image_changed)

    def _layer_removed(self, event=None) -> None:
        self._refresh_layer_choices()
        if self.image_layer is not None and self.prompts.points is None:
            QTimer.singleShot(0, self._image_changed)
        self.session.layers_changed()

    def _refresh_layer_choices(self) -> None:
        for combo, kind, extra in ((self.image_combo, "image", []), (self.labels_combo, "labels", [NEW_LABELS_ITEM])):
            current = combo.currentText()
            names = self.layers.names(kind)
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(extra + names)
            if current in extra + names:
                combo.setCurrentText(current)
            elif kind == "image" and names:
                combo.setCurrentIndex(len(names) - 1)
            elif kind == "labels" and LABELS_NAME in names:
                combo.setCurrentText(LABELS_NAME)
            combo.blockSignals(False)
        self.session.set_image(self.image_combo.currentText() or None)
        self.session.set_labels(self._labels_choice())
        if self.image_combo.currentText() != (self.prompts.image_name or ""):
            QTimer.singleShot(0, self._image_changed)

    def _labels_choice(self) -> str | None:
        name = self.labels_combo.currentText()
        return None if not name or name == NEW_LABELS_ITEM else name

    def _image_changed(self, gradual: bool = True) -> None:
        """The image in the Image box gets its prompt layers (one layer per step, see the module docstring)."""
        self.session.set_image(self.image_combo.currentText() or None)
        if self._layer_step_pending or not self._warmed_up:
            return  # the scheduled step (or the end of the warm-up) finishes the job
        layer = self.image_layer
        if layer is None or int(layer.ndim) < 2:
            return self._layers_ready()
        if self.layers.add_a_missing_layer(layer.name):
            self._layer_step_pending = True
            QTimer.singleShot(LAYER_SPACING_MS, self._next_layer_step)
            return None
        self.session.attach()
        self._layers_ready()
        return None

    def _next_layer_step(self) -> None:
        self._layer_step_pending = False
        self._image_changed()

    def _layers_ready(self) -> None:
        """Run what waited for the image's layers (the first model load, the zoo list)."""
        waiting, self._when_layers_ready = self._when_layers_ready, []
        for fn in waiting:
            fn()

    @property
    def image_layer(self):
        """The Image layer in the widget's Image box (None if there is none)."""
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    @property
    def labels_layer(self):
        """The target Labels layer (None until the first commit creates "granseg labels")."""
        name = self.session.state.labels
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    @property
    def prompts_layer(self):
        return self.prompts.points

    @property
    def shapes_layer(self):
        return self.prompts.shapes

    @property
    def preview_layer(self):
        from .layers import PREVIEW_NAME

        return self.viewer.layers[PREVIEW_NAME] if PREVIEW_NAME in self.viewer.layers else None

    # ================================================================ actions (console and buttons)
    @property
    def granularity(self) -> float:
        return float(round(self.granularity_slider.value(), 3))

    @granularity.setter
    def granularity(self, value: float) -> None:
        self.granularity_slider.setValue(float(np.clip(value, 0.1, 1.0)))

    def set_mode(self, mode: str) -> None:
        """Pointer mode: "click" (points), "box" (drag a rectangle) or "scribble" (draw a line over the object)."""
        self.session.set_mode(mode)

    def set_channels(self, text: str) -> None:
        """Pick an entry of the channels box by its text (e.g. "channel 1"); the preview follows."""
        self.session.set_channels(text)

    def add_prompt(self, point_rc: Sequence[float], positive: bool = True) -> None:
        """Add a click at ``(row, col)`` of the current slice (console/tests); the preview follows."""
        self.session.add_prompt(point_rc, positive)

    def segment_points(self, points_rc, granularity: float | None = None, labels=None, show: bool = True):
        """Segment one object from ``[(row, col), ...]`` on the current slice, synchronously (console)."""
        return self.session.segment_points(points_rc, granularity, labels, show)

    def commit(self) -> int | None:
        """Write the preview as a new label; waits for a preview still being computed (then returns None)."""
        return self.session.commit()

    def next_object(self) -> None:
        """Start a new object: remove the prompts of the current slice and the preview (nothing is written)."""
        self.session.next_object()

    def undo(self) -> None:
        """Undo the last edit of the target Labels layer (napari's own history)."""
        self.session.undo()

    def embed_all_slices(self) -> None:
        self.session.embed_all()

    def propagate(self) -> None:
        self.session.propagate()

    def run_prompts(self) -> None:
        self.session.run_prompts()

    def current_index(self, layer=None) -> tuple[int, ...]:
        """Leading (z, t, ...) indices of the slice shown."""
        return self.layers.current_index(layer.name) if layer is not None else self.session.current_index()

    def tile_for(self, hw) -> int | None:
        return self.session.tile_for(hw)

    def tiled_predictor(self, tile: int):
        """The ``TiledPredictor`` the preview uses for ``tile`` (tiles embedded once stay embedded)."""
        return self.session.plan.tiles(tile, self.session.predictor).tiled

    @property
    def preview(self):
        return self.session.preview

    @property
    def preview_mask(self) -> np.ndarray | None:
        """The current preview (H, W) bool mask, or None."""
        shown = self.session.preview.shown
        return None if shown is None else shown.mask.view(bool)

    @property
    def preview_request(self):
        """What the preview shown was computed from (points, labels, g, box)."""
        shown = self.session.preview.shown
        return None if shown is None else shown.request

    @property
    def last_commit(self):
        return self.session.last_commit

    @property
    def last_message(self) -> tuple[str, str] | None:
        return self.session.last_message

    @property
    def busy(self) -> bool:
        """True while a model load, embedding, propagation, preview or connection runs in the background."""
        return self.session.busy or self.compute.connecting

    @property
    def state(self) -> dict:
        """A summary of the widget's state (for the console)."""
        index = self.current_index() if self.image_layer is not None else None
        return self.session.state.summary(index)

    # ================================================================ rendering
    def _render(self, st: SessionState) -> None:
        try:
            self._render_state(st)
        except RuntimeError:  # pragma: no cover - the widget was closed while an event was queued
            return
        for event in st.events:
            if event.kind == "message":
                notify(*event.value)
            else:
                signal = getattr(self, _SIGNAL_OF_EVENT[event.kind])
                signal.emit() if event.value is None else signal.emit(event.value)

    def _render_state(self, st: SessionState) -> None:
        m = st.model
        self.commit_button.setEnabled(st.can_commit)
        self.next_button.setEnabled(st.can_next)
        self.undo_button.setEnabled(st.can_undo)
        self.run_button.setEnabled(st.can_run)
        self.embed_all_button.setEnabled(st.can_embed)
        self.propagate_button.setEnabled(st.can_propagate)
        self.load_button.setEnabled(not st.task_running)
        self.model_label.setText(m.description)
        self.demo_banner.setText(m.banner)
        self.demo_banner.setVisible(bool(m.banner))
        self.granularity_slider.setEnabled(m.has_granularity)
        if abs(self.granularity_slider.value() - st.options.granularity) > 1e-9:
            self.granularity_slider.blockSignals(True)
            self.granularity_slider.setValue(st.options.granularity)
            self.granularity_slider.blockSignals(False)
        for mode, button in self.mode_buttons.items():
            button.setChecked(mode == st.options.mode)
        items = [self.channels_combo.itemText(i) for i in range(self.channels_combo.count())]
        if items != list(st.channel_choices) or self.channels_combo.currentText() != st.settings.channels:
            self.channels_combo.blockSignals(True)
            self.channels_combo.clear()
            self.channels_combo.addItems(list(st.channel_choices))
            self.channels_combo.setCurrentText(st.settings.channels)
            self.channels_combo.blockSignals(False)
        self.channels_combo.setEnabled(len(st.channel_choices) > 1)
        if st.labels is not None and self.labels_combo.currentText() != st.labels:
            if self.labels_combo.findText(st.labels) < 0:
                self.labels_combo.addItem(st.labels)
            self.labels_combo.blockSignals(True)
            self.labels_combo.setCurrentText(st.labels)
            self.labels_combo.blockSignals(False)
        if not st.task_running:  # while a task runs, its progress message stays
            self.status.setText(st.status)

"""The interactive session: click an object, slide the granularity, commit it as a label, undo, propagate.

Why a class without Qt or napari: the rules of the interactive widget live here, one owner per piece of
state, the same under the dock widget, in a script and in tests. It owns the model (:class:`.model.ModelLoader`,
ONE :class:`~.state.ModelState` value), the image and labels target, the options, the image plan (what the
model sees), the preview (:class:`~.preview.PreviewController`), the last commit and the status line. The
prompts live in the layer port (the napari prompt layers in the app); the session reads them.

Outside work comes in through small interfaces (:mod:`.ports`): job runners (thread workers in the app,
:class:`~.ports.SyncRunner` in tests), a debounce timer and the layer port. After every change the session
publishes one immutable :class:`~.state.SessionState` through :attr:`changed`.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Sequence

import numpy as np
from psygnal import Signal

from .._common import WidgetError, checked_granularity, checked_precision
from .model_view import ModelView
from .jobs import object_prompt, plan_embed, preview_job, propagation_job, segment_now
from .model import ModelLoader
from .preview_request import RequestInputs, build_request
from .ports import ImageInfo, JobRunner, LayerPort, Timer
from .preview import PreviewController, PreviewRequest, PreviewResult
from .state import CommitRecord, Event, ModelState, Options, SessionState
from .status import Facts, build_state, error_text

__all__ = ["InteractiveSession"]


class InteractiveSession:
    """See the module docstring. ``debounce(fire)`` builds the preview's timer calling ``fire``."""

    changed = Signal(object)  # the new SessionState

    def __init__(self, layers: LayerPort, *, task_runner: JobRunner, preview_runner: JobRunner,
                 model_runner: JobRunner, debounce: Callable[[Callable[[], None]], Timer]):
        self.layers = layers
        self._task, self._preview_task = task_runner, preview_runner
        self._options = Options()
        self._image: str | None = None
        self._labels: str | None = None
        self.plan = ModelView()
        self.last_commit: CommitRecord | None = None
        self.last_message: tuple[str, str] | None = None
        self._last_action = ""
        self._timer = debounce(self._debounce_fired)
        self.preview = PreviewController(self._timer, self._snapshot, self._launch, self._show, self._clear,
                                         commit=lambda: self.guard(self._write_commit),
                                         cancel_commit=lambda why: self._message("warning", why))
        self.models = ModelLoader(model_runner, self._model_changed, self._publish, self.report)
        layers.bind(self._prompts_changed)
        self.state = self._build_state(())

    # ================================================================ model
    @property
    def predictor(self):
        return self.models.state.predictor

    def load(self, name: str | None = None, device: str = "auto", where: Any = None) -> None:
        """Load a model (and build its predictor) in the background, here or on ``where`` (a remote session)."""
        self.models.load(name, device, where)

    def use_model(self, loaded: Any, predictor: Any = None) -> None:
        """Use ``loaded`` (from ``gs.load_model``) on this machine (see :meth:`ModelLoader.use`)."""
        self.models.use(loaded, predictor)

    def switch_compute(self, where: Any, name: str | None, device: str = "auto") -> None:
        """Compute switched (this machine <-> a remote session): drop the predictor and load the model there."""
        self._last_action = "this machine" if where is None else f"connected to {where.address}"
        self.models.switch(where, name, device)

    def set_precision(self, precision: str) -> None:
        """Numeric precision ("auto", "fp32", "bf16"): the predictor is built again."""
        self._options = replace(self._options, precision=checked_precision(precision))
        self.models.set_precision(precision)

    def _model_changed(self, state: ModelState, is_new_model: bool) -> None:
        self.preview.invalidate()
        if is_new_model and state.where is not None:
            self._last_action = f"connected to {state.where.address}"
        self._publish(*([Event("model")] if is_new_model else []))
        if is_new_model:
            self.preview.schedule()

    @property
    def _model(self) -> ModelState:
        return self.models.state

    def _require_model(self):
        if not self._model.ready:
            raise WidgetError("no model loaded yet: press Load (the first load can take a while), or wait for the "
                              "default model to finish loading")
        return self._model.predictor

    def _require_local(self, what: str) -> None:
        if self._model.where is not None:
            raise WidgetError(f"{what} runs on this machine only for now: set Compute to 'this machine' (the "
                              f"preview, commits and propagation work with the GPU worker)")

    # ================================================================ image, labels, what the model sees
    def set_image(self, name: str | None) -> None:
        """Segment image ``name`` (its prompt layers are attached by :meth:`attach`)."""
        if name != self._image:
            self._image = name
            self.preview.invalidate()
        self.refresh_choices()
        self._publish()

    def attach(self) -> None:
        """Give the prompt layers to the image (emptied for a new image); clicks become prompts."""
        info = self._image_info()
        if info is None or info.ndim < 2:
            return
        if self.layers.prompts_image() != info.name:
            self.preview.invalidate()
        self.layers.attach(info.name)
        self._publish()

    def layers_changed(self) -> None:
        """Layers were added or removed: the prompts' image may be gone, the channel choices may differ."""
        prompts_image = self.layers.prompts_image()
        if prompts_image is not None and self.layers.image(prompts_image) is None:
            self.preview.invalidate()
        self.refresh_choices()
        self._publish()

    def set_labels(self, name: str | None) -> None:
        """Commit into labels layer ``name`` (None: a new "granseg labels" layer at the first commit)."""
        self._labels = name
        self._publish()

    def refresh_choices(self) -> None:
        info = self._image_info()
        self.plan.set_choices([] if info is None else self.layers.channel_choices(info.name))

    def set_channels(self, text: str) -> None:
        """Pick an entry of the channels box by its text (e.g. "channel 1"); the preview follows."""
        if self.plan.set_channels(text):
            self._view_changed()

    def set_scale(self, scale: str, tile: int) -> None:
        """Scale ("auto", "tile", "downscale") and tile size (0: the model's input size)."""
        if self.plan.set_scale(scale, tile):
            self._view_changed()

    def tile_for(self, hw) -> int | None:
        """The tile size (pixels) when an image of size ``hw`` is tiled with the Scale setting, else None."""
        return self.plan.tile_for(hw, self._model.predictor)

    def _view_changed(self) -> None:
        """Scale, tile or channels changed: the shown preview no longer matches what the model sees."""
        self.preview.invalidate()
        if self.layers.prompt_count():
            self.preview.schedule()
        self._publish()

    def _image_info(self) -> ImageInfo | None:
        return self.layers.image(self._image)

    def _require_image(self) -> ImageInfo:
        info = self._image_info()
        if info is None:
            raise WidgetError("no image layer: open an image first (File > Open, or File > Open Sample > GranSeg), "
                              "then pick it in the widget's Image box")
        if info.ndim < 2:
            raise WidgetError(f"layer {info.name!r} is 1D; the widget needs 2D images or stacks of them")
        return info

    def current_index(self) -> tuple[int, ...]:
        """Leading (z, t, ...) indices of the slice shown."""
        return self.layers.current_index(self._require_image().name)

    def slice_changed(self) -> None:
        shown = self.preview.shown
        if shown is not None and self._image_info() is not None and shown.request.index != self.current_index():
            self.preview.invalidate()
        self.preview.schedule()

    # ================================================================ prompts and options
    def add_prompt(self, point_rc: Sequence[float], positive: bool = True) -> None:
        """A click at ``(row, col)`` of the current slice; the preview follows."""
        info = self._require_image()
        if self.layers.prompts_image() != info.name:
            self.attach()
        self.layers.add_point(list(self.current_index()) + [float(point_rc[0]), float(point_rc[1])], positive)

    def _prompts_changed(self) -> None:
        if self._options.live:
            self.preview.schedule()
        self._publish()

    def run_prompts(self) -> None:
        """Preview all prompts placed so far (when the live preview is off, prompts wait for this)."""
        self._require_model()
        self.preview.schedule()

    def set_mode(self, mode: str) -> None:
        """Pointer mode: "click" (points), "box" (drag a rectangle) or "scribble" (draw over the object)."""
        self._require_image()
        self.layers.activate(mode)
        self._options = replace(self._options, mode=mode)
        self._publish()

    def set_granularity(self, g: float) -> None:
        """g in [0.1, 1]: the nearest decoded mask at once, the exact one when the value rests."""
        g = float(round(checked_granularity(g), 3))
        if g == self._options.granularity:
            return
        self._options = replace(self._options, granularity=g)
        self.preview.quick_show(g)
        self.preview.schedule()
        self._publish()

    def set_options(self, **changes: Any) -> None:
        """negative=, live=, refine= (the toggles)."""
        self._options = replace(self._options, **changes)
        self._publish()

    # ================================================================ preview (the controller's callbacks)
    def _debounce_fired(self) -> None:
        self.guard(self.preview.fire)

    def _snapshot(self, serial: int) -> PreviewRequest | None:
        info, model = self._image_info(), self._model
        if info is None or not model.ready or self.layers.prompts_image() != info.name:
            return None
        inputs = RequestInputs(info, model.predictor, self._options.granularity if model.has_granularity else None,
                               self.plan.choice, self.tile_for(info.hw), self._labels, self._options.refine,
                               self.plan.intensity(info))
        return build_request(serial, self.layers, inputs, lambda text: self._message("warning", text))

    def _launch(self, req: PreviewRequest) -> None:
        tile = req.extra.get("tile")
        job = preview_job(self._model.predictor, self.plan.tiles(tile, self._model.predictor) if tile else None, req, self.preview.is_stale,
                          local=self._model.where is None)
        self._preview_task.start(job, on_yield=self._preview_yielded, on_error=self.report,
                                 on_finished=self._preview_finished, message="")
        self._publish()

    def _preview_yielded(self, item) -> None:
        if isinstance(item, PreviewResult):
            self.preview.offer(item)
        elif item[0] == "intensity":
            self.plan.remember_intensity(item[1], item[2])
        else:
            self.preview.store_sweep(*item[1:])

    def _preview_finished(self) -> None:
        self.preview.run_finished()
        self._publish()

    def _show(self, result: PreviewResult, exact: bool) -> None:
        if result.request.image_name != self._image:
            return
        self.layers.show_preview(result.mask)
        g = "" if result.granularity is None else f" at g={result.granularity:g}"
        self._last_action = f"preview: {int(np.count_nonzero(result.mask))} px{g}" + ("" if exact else " (nearest)")
        self._publish(Event("preview"))

    def _clear(self) -> None:
        self.layers.clear_preview()
        self._publish(Event("preview"))

    def segment_points(self, points_rc: Sequence[Sequence[float]], granularity: float | None = None,
                       labels: Sequence[int] | None = None, show: bool = True) -> np.ndarray:
        """Segment one object from ``[(row, col), ...]`` on the current slice, in the calling thread.

        labels: 1/0 per point (default all positive). granularity: default the session's. show: also display
        it as the preview, so :meth:`commit` writes it. Returns the (H, W) bool mask.
        """
        pred = self._require_model()
        info = self._require_image()
        index = self.current_index()
        g = (self._options.granularity if granularity is None else float(granularity)) \
            if self._model.has_granularity else None
        image = np.asarray(info.slice(index))
        masks, ious, pts, lab, intensity = segment_now(pred, image, index, info.stack() if index else None,
                                                       points_rc, labels, g)
        if show:
            self.preview.invalidate()
            req = PreviewRequest(self.preview.serial, info.name, index, image, pts, lab, g, intensity=intensity)
            self.preview.offer(PreviewResult(req, masks[0].view(np.uint8), float(ious[0]), g))
        return masks[0]

    # ================================================================ commit, next, undo
    def commit(self) -> int | None:
        """Write the preview as a new label (or the refined label); waits for a preview still being computed:
        returns the label id, or None when the commit happens as soon as the pending preview arrives."""
        if self.preview.shown is None and not self.layers.prompt_count():
            raise WidgetError("nothing to commit: click on an object first (prompts layer in add mode) and wait for "
                              "the yellow preview")
        if self.preview.commit_when_ready():
            return self._write_commit()
        self._last_action = "committing as soon as the preview of the latest prompts is ready…"
        self._publish()
        return None

    def _write_commit(self) -> int:
        shown = self.preview.shown
        req = shown.request
        info = self.layers.image(req.image_name)
        if info is None:
            raise WidgetError("the image of this preview was removed: click an object again")
        shape = info.shape[-2:] if req.index == () and info.ndim > 2 else info.shape
        self._labels = self.layers.target_labels(info, self._labels, tuple(shape))
        label_id, n = self.layers.write_object(self._labels, req.index, shown.mask.view(bool), req.refine_label)
        self.last_commit = CommitRecord(req.image_name, self._labels, label_id, req.index, req.points_xy,
                                        req.point_labels, req.granularity, req.box, n)
        self.next_object()
        self._last_action = f"{'refined' if req.refine_label else 'committed'} label {label_id} ({n} px)"
        self.layers.activate(self._options.mode)
        self._publish(Event("committed", label_id))
        return label_id

    def next_object(self) -> None:
        """Start a new object: remove the prompts of the current slice and the preview (nothing is written)."""
        info = self._image_info()
        if info is not None and self.layers.prompts_image() == info.name:
            self.preview.invalidate()   # first: the prompt removal below must not schedule a preview
            self.layers.clear_prompts(self.layers.current_index(info.name))
            self._timer.stop()
        self.preview.invalidate()
        self._last_action = ""
        self._publish()

    def undo(self) -> None:
        """Undo the last edit of the target labels layer (napari's own history)."""
        if not self.layers.can_undo(self._labels):
            raise WidgetError("nothing to undo in the target labels layer")
        self.layers.undo(self._labels)
        self._last_action = "undone"
        self.layers.activate(self._options.mode)
        self._publish()

    def redo(self) -> None:
        if self._labels is not None:
            self.layers.redo(self._labels)
            self._publish()

    # ================================================================ stacks and tiled images
    def embed_all(self) -> None:
        """Embed (and cache) every slice, nearest to the current first, or every tile of a tiled 2D image."""
        pred = self._require_model()
        info = self._require_image()
        self._require_local("Embed all")
        tile = self.tile_for(info.hw) if info.ndim == 2 else None
        if not tile:
            info.stack()  # a 2D or 4D image says what to do
        if self._task.running:
            raise WidgetError("another task is running: wait for it or press Cancel")
        job, what, message = plan_embed(pred, info, None if tile else self.current_index()[0],
                                        self.plan.tiles(tile, self._model.predictor) if tile else None,
                                        self.plan.intensity(info),
                                        lambda text: self._message("warning", text))

        def finished(count):
            where = "clicks on them" if what == "slice" else "clicks anywhere"
            self._last_action = f"{count} {what} embeddings cached: {where} only run the decoder"
            self._publish(Event("embedded", int(count)))

        self._task.start(job, on_done=finished, on_error=self.report, on_finished=self._publish, message=message)
        self._publish()

    def propagate(self) -> None:
        """Propagate the last commit through the stack (background, here or remote; same label id)."""
        pred = self._require_model()
        rec = self.last_commit
        if rec is None:
            raise WidgetError("nothing to propagate: segment an object on one slice and commit it (C) first")
        info = self.layers.image(rec.image_name)
        if info is None or self.layers.labels_region(rec.labels_name, ()) is None:
            raise WidgetError("the layers of the last commit were removed: commit an object again")
        stack = info.stack()
        if self._task.running:
            raise WidgetError("another task is running: wait for it or press Cancel")
        job = propagation_job(self._model.model, pred, stack, object_prompt(rec), where=self._model.where)
        self._task.start(job, on_done=lambda result: self._write_propagation(rec, result), on_error=self.report,
                         on_finished=self._publish,
                         message=f"propagating label {rec.label_id} through {stack.shape[0]} slices…")
        self._publish()

    def _write_propagation(self, rec: CommitRecord, result: np.ndarray) -> None:
        n = self.layers.write_propagation(rec.labels_name, result, rec.label_id, rec.index[0])
        if n == 0:
            self._message("warning", f"propagation found label {rec.label_id} on no other slice; try another "
                                     f"granularity or more clicks")
        self._last_action = f"label {rec.label_id} propagated into {n} more slices"
        self._publish(Event("propagated", n))

    def cancel(self) -> None:
        """Stop the running task (embedding, propagation) at its next slice; nothing is written."""
        self._task.cancel()
        self._last_action = "cancelled, nothing was written"
        self._publish()

    # ================================================================ errors, messages, state
    def report(self, exc: BaseException) -> None:
        """An error becomes a message for the person (see :func:`.status.error_text`)."""
        text, in_status = error_text(exc)
        if in_status:
            self._last_action = text
        self._message("error", text)

    def report_text(self, text: str) -> None:
        """An error already worded for the person (a refused compute address)."""
        self._last_action = text
        self._message("error", text)

    def guard(self, fn: Callable[[], Any]) -> Any:
        """Run an action; errors become messages (see :meth:`report`)."""
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - reported
            self.report(exc)
        finally:
            self._publish()
        return None

    def _message(self, level: str, text: str) -> None:
        self.last_message = (level, text)
        self._publish(Event("message", (level, text)))

    @property
    def busy(self) -> bool:
        """True while a model load, an embedding, a propagation or a preview runs in the background."""
        return self._task.running or self._preview_task.running or self.preview.busy or self.models.busy

    def _build_state(self, events: tuple[Event, ...]) -> SessionState:
        info, model = self._image_info(), self._model
        facts = Facts(model, info, self.preview.shown, self.preview.want_commit or self.preview.busy,
                      self.layers.prompt_count(), self.layers.click_target() if info is not None else None,
                      self.layers.can_undo(self._labels), not self._task.running,
                      model.ready and info is not None and info.ndim == 2 and bool(self.tile_for(info.hw)))
        return build_state(facts, self._options, self.plan.settings, self._labels,
                           tuple(c.text for c in self.plan.choices),
                           self.last_commit, self.last_message, self._last_action, self.busy, events)

    def refresh(self, happened: str = "") -> None:
        """Publish the state again: something outside changed what the status says (the active layer), or
        ``happened`` outside the session (labels restored) and becomes the status line's last action."""
        self._last_action = happened or self._last_action
        self._publish()

    def _publish(self, *events: Event) -> None:
        self.state = self._build_state(events)
        self.changed.emit(self.state)

"""The interactive widget's side of the preview: prompts -> request, the background job, the layer update.

Why apart from :mod:`._preview`: that module holds the rules (which result may be shown, when a commit may
happen) without napari; this mixin does the napari and model work they call for:

- ``_snapshot`` reads the prompt layers on the GUI thread (cheap: no full-size copy; the slice itself, and
  the first time the stack's intensity range, are read in the worker) and, in "refine" mode, the
  clicked label as the starting mask (``mask_input``, low-res logits);
- ``_launch`` runs the decoder in a thread worker under the predictor's lock, yields the exact mask first,
  then decodes the g sweep in small chunks, stopping as soon as the request is stale;
- ``_show`` hands the mask (uint8 view, no copy) to the preview layer.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ._image_source import level0, read_model_image
from ._predictor import is_cached, model_size, predictor_lock, set_image, stack_intensity
from ._preview import SWEEP_G, PreviewRequest, PreviewResult
from ._prompt_layers import spatial_shape
from ._stack_actions import stack_data
from ._tasks import Progress

__all__ = ["PreviewGlue", "SWEEP_MAX_PIXELS", "label_logits"]

#: sweep masks are kept only for images up to this many pixels (10 masks of this size stay in memory)
SWEEP_MAX_PIXELS = 4096 * 4096
#: decoded per call during the sweep (small, so a new click waits at most this many decoder passes)
SWEEP_CHUNK = 3


def label_logits(region: np.ndarray, label_id: int, side: int) -> np.ndarray:
    """(1, side, side) float32 logits (+8 inside, -8 outside) of ``label_id`` in ``region``, sampled at the
    model's low-res mask size (``image_size // 4``) without reading the full-size slice."""
    h, w = region.shape[-2:]
    rows = ((np.arange(side) + 0.5) * h / side).astype(int)
    cols = ((np.arange(side) + 0.5) * w / side).astype(int)
    low = np.asarray(region[np.ix_(rows, cols)]) == label_id
    return np.where(low, 8.0, -8.0).astype(np.float32)[None]


class PreviewGlue:
    """Mixin of :class:`~napari_granseg.widgets.interactive.InteractiveWidget` (see the module docstring)."""

    def _snapshot(self, serial: int) -> PreviewRequest | None:
        layer = self.image_layer
        if layer is None or self.predictor is None or self.prompts.image_name != layer.name:
            return None
        self._check_view()
        index = self.current_index(layer)
        hw = spatial_shape(layer)[-2:]
        prompts = self.prompts.read(index, hw)
        if prompts.n_outside:
            self._notify("warning", f"{prompts.n_outside} prompt point(s) lie outside the image ({hw[0]} x {hw[1]})"
                                    f" and are ignored: delete them (prompts layer, select mode S, then Delete)")
        g = self.granularity if self.predictor.has_granularity else None
        choice = self.channel_choice
        model_index = () if choice is not None and choice.flattens_stack else index
        tile = self.tile_for(hw)
        mask_input, refine = self._refine_input(index, prompts)
        if refine and tile:
            raise self.error_type("refine label works on the downscaled view: set Scale to 'downscale'")
        intensity, extra = None, {"channel": choice, "tile": tile}
        if choice is not None and choice.kind == "axis":
            extra["full"] = level0(layer)
        elif choice is not None and choice.kind == "layers":
            extra["layer_data"] = [level0(self.viewer.layers[n]) for n in choice.layers if n in self.viewer.layers]
        elif model_index:  # one intensity range per stack, computed once (in the worker: it reads the stack)
            key = (layer.name, spatial_shape(layer))
            intensity = self._intensity.get(key)
            if intensity is None:
                extra.update(stack=stack_data(layer), intensity_key=key)
        return PreviewRequest(serial, layer.name, model_index, self.current_slice_image(layer, index),
                              prompts.points_xy, prompts.point_labels, g, prompts.box, mask_input, refine,
                              intensity, extra)

    def _refine_input(self, index, prompts) -> tuple[np.ndarray | None, int | None]:
        """Low-res logits of the existing label under the first positive click ("refine" on), else (None, None)."""
        labels = self.labels_layer
        pos = prompts.points_xy[prompts.point_labels == 1]
        if not self.refine_check.isChecked() or labels is None or not len(pos):
            return None, None
        region = labels.data[index] if index else labels.data
        x, y = np.round(pos[0]).astype(int)
        label_id = int(region[y, x])
        if label_id == 0:
            return None, None
        size = model_size(self.predictor)
        if size is None:
            raise self.error_type("refine label needs a model on this machine (set compute to 'this machine')")
        return label_logits(region, label_id, size // 4), label_id

    def _launch(self, req: PreviewRequest) -> None:
        pred, lock, stale = self.predictor, predictor_lock(self.predictor), self.preview.is_stale
        tile, choice = req.extra.get("tile"), req.extra.get("channel")
        tiled = self.tiled_predictor(tile) if tile else None
        image_key = (req.image_name, req.index, None if choice is None else choice.text, tile)
        sweep = (req.granularity is not None and req.mask_input is None
                 and np.prod(np.shape(req.image)[:2]) <= SWEEP_MAX_PIXELS)

        def predict(image, g):
            with lock:
                if tiled is None:
                    set_image(pred, image, req.intensity)
                    model = pred
                else:  # tiles are embedded on demand and cached; the image is set once per image
                    if getattr(tiled, "granseg_key", None) != image_key:
                        tiled.set_image(image, intensity=req.intensity)
                        tiled.granseg_key = image_key
                    model = tiled
                pts = req.points_xy if len(req.points_xy) else None
                return model.predict(pts, req.point_labels if pts is not None else None, granularity=g,
                                     box=req.box, mask_input=req.mask_input)

        def job(is_cancelled):
            image = read_model_image(choice, req.image, req.extra.pop("full", None),
                                     req.extra.pop("layer_data", ()))
            if "stack" in req.extra:
                req.intensity = stack_intensity(req.extra.pop("stack"))
                yield ("intensity", req.extra["intensity_key"], req.intensity)
            if tiled is None and hasattr(pred, "is_cached") and not is_cached(pred, image, req.intensity):
                yield Progress(0, 0, "computing the embedding of this " + ("slice…" if req.index else "image…"))
            masks, ious, _ = predict(image, req.granularity)
            yield PreviewResult(req, masks[0].view(np.uint8), float(ious[0]), req.granularity)
            g0 = req.granularity
            rest = sorted((g for g in SWEEP_G if abs(g - g0) > 1e-6), key=lambda g: abs(g - g0)) if sweep else []
            for start in range(0, len(rest), SWEEP_CHUNK):
                if stale(req.serial) or is_cancelled():
                    return None
                chunk = rest[start:start + SWEEP_CHUNK]
                masks, _, _ = predict(image, chunk)
                yield ("sweep", req, chunk, [m.view(np.uint8) for m in masks])
            return None

        def yielded(item):
            if isinstance(item, PreviewResult):
                self.preview.offer(item)
            elif item[0] == "intensity":
                self._intensity[item[1]] = item[2]
            else:
                self.preview.store_sweep(*item[1:])

        self._preview_task.start(job, on_yield=yielded, on_error=self._report, message="")
        self._refresh()

    def _show(self, result: PreviewResult, exact: bool) -> None:
        if result.request.image_name != self.image_combo.currentText():
            return
        layer = self.preview_layer or self._ensure_preview_layer(self.image_layer)
        layer.data = result.mask
        g = "" if result.granularity is None else f" at g={result.granularity:g}"
        self._last_action = f"preview: {int(np.count_nonzero(result.mask))} px{g}" + ("" if exact else " (nearest)")
        self.preview_updated.emit()
        self._refresh()

    def _clear(self) -> None:
        layer = self.preview_layer
        if layer is not None and self._blank is not None and layer.data is not self._blank:
            layer.data = self._blank
        self.preview_updated.emit()

    @property
    def preview_mask(self) -> np.ndarray | None:
        """The current preview (H, W) bool mask, or None."""
        shown = self.preview.shown
        return None if shown is None else shown.mask.view(bool)

    @property
    def preview_request(self) -> PreviewRequest | None:
        """What the preview shown was computed from (points, labels, g, box)."""
        return None if self.preview.shown is None else self.preview.shown.request

    def segment_points(self, points_rc: Sequence[Sequence[float]], granularity: float | None = None,
                       labels: Sequence[int] | None = None, show: bool = True) -> np.ndarray:
        """Segment one object from ``[(row, col), ...]`` on the current slice, synchronously (console).

        labels: 1/0 per point (default all positive). granularity: default the slider's value.
        show: also display it as the preview, so ``commit()`` writes it. Returns the (H, W) bool mask.
        """
        pred = self._require_model()
        layer = self._require_image()
        index = self.current_index(layer)
        image = np.asarray(self.current_slice_image(layer, index))
        pts = np.asarray(points_rc, np.float32).reshape(-1, 2)[:, ::-1].copy()
        lab = np.ones(len(pts), np.int32) if labels is None else np.asarray(labels, np.int32).reshape(-1)
        g = (self.granularity if granularity is None else float(granularity)) if pred.has_granularity else None
        intensity = stack_intensity(stack_data(layer)) if index else None
        with predictor_lock(pred):
            set_image(pred, image, intensity)
            masks, ious, _ = pred.predict(pts, lab, granularity=g)
        if show:
            self.preview.invalidate()
            req = PreviewRequest(self.preview.serial, layer.name, index, image, pts, lab, g, intensity=intensity)
            self.preview.offer(PreviewResult(req, masks[0].view(np.uint8), float(ious[0]), g))
        return masks[0]


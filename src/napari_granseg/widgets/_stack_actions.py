"""Writing objects into Labels layers and the stack actions of the interactive widget.

Why a module: commit, "Embed all slices" and propagation are where user data is written or where minutes of
compute run. The rules live here, in plain functions the dock calls:

- an object is written only on background pixels (never over another label), as ONE undo step of the
  Labels layer (``Labels.block_history``), so Ctrl+Z removes exactly what the widget wrote;
- refining an existing label replaces that label's pixels (what the refined mask drops goes back to
  background) in the same single undo step;
- background jobs check ``is_cancelled`` after every slice, and report progress with the true number of
  steps (SAM 2's video propagation visits the prompted slice in both directions: n + 1 frames in all).
"""
from __future__ import annotations

from typing import Any, Callable, Generator

import numpy as np

from ._predictor import predictor_lock, set_image, stack_intensity
from ._prompt_layers import spatial_shape
from ._tasks import Progress, blocking_with_progress
from .recovery_hooks import record_write

__all__ = ["StackActions", "write_object", "write_propagation", "stack_data", "embedding_order", "embed_job", "tile_embed_job", "propagation_job",
           "EMBED_BUDGET_BYTES"]

#: at most this many bytes of cached slice embeddings for "Embed all slices" (then the nearest slices first)
EMBED_BUDGET_BYTES = 1 << 30


def stack_data(layer, error: type[Exception] = ValueError):
    """The (T, H, W[, C]) data of a 3D Image layer; 2D and 4D+ layers raise ``error`` saying what to do."""
    nd = int(layer.ndim)
    if nd < 3:
        raise error(f"{layer.name!r} is a single 2D image; embedding all slices and propagation are for "
                    f"z-stacks and time series (3D layers)")
    if nd > 3:
        raise error(f"{layer.name!r} has {nd} spatial/time axes {spatial_shape(layer)} "
                    f"{'(RGB) ' if layer.rgb else ''}but propagation runs along one axis (z or t): add one time "
                    f"point or one z as its own layer, e.g. viewer.add_image(layer.data[t])")
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def write_object(labels, index: tuple[int, ...], mask: np.ndarray, refine_label: int | None = None,
                 error: type[Exception] = ValueError) -> tuple[int, int]:
    """Write ``mask`` on slice ``index`` of ``labels`` as one undo step; returns (label id, pixels written).

    New object: id = max + 1, only on background pixels. ``refine_label``: that label's pixels on the slice
    are replaced by ``mask`` (on background or its own pixels; other labels are never overwritten).
    """
    data = labels.data
    region = np.asarray(data[index]) if index else np.asarray(data)
    mask = np.asarray(mask, bool)
    if refine_label:
        label_id = int(refine_label)
        allowed = (region == 0) | (region == label_id)
    else:
        label_id = int(np.max(data)) + 1
        allowed = region == 0
        if label_id > np.iinfo(data.dtype).max:
            raise error(f"labels layer {labels.name!r} ({data.dtype}) cannot hold label {label_id}: convert it "
                        f"with layer.data = layer.data.astype('int32')")
    write = mask & allowed
    if not write.any():
        raise error("this object is already labelled (commit writes only on background pixels): click another "
                    "object, or change the granularity")
    drop = (region == label_id) & ~write if refine_label else np.zeros_like(write)
    with labels.block_history():
        for value, where in ((0, drop), (label_id, write & (region != label_id))):
            if where.any():
                rr, cc = np.nonzero(where)
                indices = tuple(np.full(rr.shape, i, np.intp) for i in index) + (rr, cc)
                labels.data_setitem(indices, value)
    labels.selected_label = label_id
    return label_id, int(write.sum())


def write_propagation(labels, result: np.ndarray, label_id: int, committed_slice: int) -> int:
    """Write ``label_id`` of a propagated stack into ``labels`` (background only, the committed slice kept).

    One undo step. Returns the number of slices written (0: the object was found on no other slice).
    Reads and writes one slice at a time.
    """
    written = 0
    with labels.block_history():  # slice by slice: a dask/zarr labels layer is never read whole
        for t in range(int(np.shape(result)[0])):
            if t == committed_slice:
                continue
            write = (np.asarray(result[t]) == label_id) & (np.asarray(labels.data[t]) == 0)
            if write.any():
                rr, cc = np.nonzero(write)
                labels.data_setitem((np.full(rr.shape, t, np.intp), rr, cc), label_id)
                written += 1
    return written


def embedding_order(n: int, current: int, image_size: int,
                    budget: int = EMBED_BUDGET_BYTES) -> tuple[list[int], bool]:
    """Slices to embed, nearest to ``current`` first, as many as fit in ``budget``; (order, truncated)."""
    s = int(image_size)
    per_slice = 4 * (256 * (s // 16) ** 2 + 64 * (s // 8) ** 2 + 32 * (s // 4) ** 2)  # hiera feature sizes
    capacity = max(1, min(n, budget // per_slice))
    order = sorted(range(n), key=lambda i: (abs(i - current), i))
    return order[:capacity], capacity < n


def embed_job(predictor, stack, order: list[int], intensity: tuple[float, float] | None = None
              ) -> Callable[[Callable[[], bool]], Generator]:
    """A background job embedding ``stack[i]`` for i in ``order``; stops at the next slice when cancelled.

    intensity: the stack's (lo, hi); None = computed by the job from the stack (one range for all slices).
    """
    lock = predictor_lock(predictor)

    def job(is_cancelled):
        rng = stack_intensity(stack) if intensity is None else intensity  # read here, not on the GUI thread
        done = 0
        for i in order:
            if is_cancelled():
                return done
            image = np.asarray(stack[i])
            with lock:
                set_image(predictor, image, rng)
            done += 1
            yield Progress(done, len(order), f"embedded slice {i} ({done}/{len(order)})")
        return done

    return job


def tile_embed_job(tiled, image, intensity: tuple[float, float] | None = None
                   ) -> Callable[[Callable[[], bool]], Generator]:
    """A background job embedding every tile of ``image`` (read here) with ``tiled`` (a ``TiledPredictor``);
    stops at the next tile when cancelled; returns how many tiles were embedded."""
    lock = predictor_lock(tiled.predictor)

    def job(is_cancelled):
        pixels = np.asarray(image)
        done = 0
        with lock:
            tiled.set_image(pixels, intensity=intensity)
        tiled.granseg_key = None  # the preview sets its own image again (cached tiles stay cached)
        tiles = tiled.iter_embed_all(cancel=is_cancelled)
        while True:
            with lock:  # one tile per lock hold: a click's preview can run between tiles
                step = next(tiles, None)
            if step is None:
                return done
            done, total = step
            yield Progress(done, total, f"embedded tile {done}/{total}")

    return job


def propagation_job(model, predictor, stack, prompt: Any) -> Callable[[Callable[[], bool]], Generator]:
    """A background job propagating ``prompt`` (an ``ObjectPrompt``) through ``stack``; returns the label stack.

    Progress counts the frames SAM 2 really runs: n + 1 (the prompted slice is visited in both directions).
    Cancel stops at the next frame (the engine raises ``PropagationCancelled``; nothing is written).
    """
    from ..engine.propagate import propagate

    lock = predictor_lock(predictor) if predictor is not None else None
    total = int(np.shape(stack)[0]) + 1

    def job(is_cancelled):
        def call(progress, cancel):
            def report(done, _engine_total):
                progress(min(int(done), total), total)

            if lock is None:
                return propagate(model, stack, prompt, progress=report, cancel=cancel)  # read per slice
            with lock:
                return propagate(model, stack, prompt, progress=report, cancel=cancel)  # read per slice

        result = yield from blocking_with_progress(call, is_cancelled)
        return result

    return job


class StackActions:
    """Mixin of :class:`~napari_granseg.widgets.interactive.InteractiveWidget`: the stack buttons' actions."""

    error_type: type[Exception] = ValueError

    def embed_all_slices(self) -> None:
        """Compute (and cache) the embeddings of all slices in the background, nearest to the current first."""
        pred = self._require_model()
        layer = self._require_image()
        self._require_local("Embed all")
        tile = self.tile_for(spatial_shape(layer)[-2:]) if int(layer.ndim) == 2 else None
        if tile:
            return self._embed_all_tiles(layer, tile)
        stack = stack_data(layer, self.error_type)
        if self._task.running:
            raise self.error_type("another task is running: wait for it or press Cancel")
        order, truncated = embedding_order(int(stack.shape[0]), self.current_index(layer)[0], pred.model.image_size)
        if truncated:
            self._notify("warning", f"embedding the {len(order)} slices nearest to the current one of "
                                    f"{stack.shape[0]} (memory budget); others are embedded on first use")
        pred.cache.max_items = max(pred.cache.max_items, len(order))
        intensity = self._intensity.get((layer.name, spatial_shape(layer)))  # None: computed in the job

        def finished(count):
            self._last_action = f"{count} slice embeddings cached: clicks on them only run the decoder"
            self.embedded.emit(int(count))

        self._task.start(embed_job(pred, stack, order, intensity), on_done=finished, on_error=self._report,
                         message=f"embedding {len(order)} slices…")

    def _embed_all_tiles(self, layer, tile: int) -> None:
        if self._task.running:
            raise self.error_type("another task is running: wait for it or press Cancel")
        from ..engine.tiling import tile_windows

        tiled = self.tiled_predictor(tile)
        n = len(tile_windows(spatial_shape(layer)[-2:], tiled.tile, tiled.overlap))

        def finished(count):
            self._last_action = f"{count} tile embeddings cached: clicks anywhere only run the decoder"
            self.embedded.emit(int(count))

        self._task.start(tile_embed_job(tiled, self.current_slice_image(layer, ())), on_done=finished,
                         on_error=self._report, message=f"embedding {n} tiles…")

    def propagate(self) -> None:
        """Propagate the last committed object through the stack (background; writes the same label id)."""
        from ..engine.propagate import ObjectPrompt

        self._require_model()
        self._require_local("Propagation")
        rec = self.last_commit
        if rec is None:
            raise self.error_type("nothing to propagate: segment an object on one slice and commit it (C) first")
        if rec.image_name not in self.viewer.layers or rec.labels_name not in self.viewer.layers:
            raise self.error_type("the layers of the last commit were removed: commit an object again")
        stack = stack_data(self.viewer.layers[rec.image_name], self.error_type)
        if self._task.running:
            raise self.error_type("another task is running: wait for it or press Cancel")
        prompt = ObjectPrompt(frame=rec.index[0], points=rec.points_xy.tolist(), labels=rec.point_labels.tolist(),
                              obj_id=rec.label_id, granularity=rec.granularity,
                              box=None if rec.box is None else rec.box.tolist())
        self._task.start(propagation_job(self._model, self.predictor, stack, prompt),
                         on_done=lambda result: self._write_propagation(rec, result), on_error=self._report,
                         message=f"propagating label {rec.label_id} through {stack.shape[0]} slices…")

    def _write_propagation(self, rec: Any, result: np.ndarray) -> None:
        n = write_propagation(self.viewer.layers[rec.labels_name], result, rec.label_id, rec.index[0])
        record_write(rec.image_name, self.viewer.layers[rec.labels_name], (), None, "propagation", self.viewer)
        if n == 0:
            self._notify("warning", f"propagation found label {rec.label_id} on no other slice; try another "
                                    f"granularity or more clicks")
        self._last_action = f"label {rec.label_id} propagated into {n} more slices"
        self.propagated.emit(n)


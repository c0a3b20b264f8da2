"""The interactive session's background jobs: the preview (exact mask, then a sweep of g), "Embed all" for a
stack or a tiled image, and propagation through a stack. Plain generator functions run by a job runner
(``widgets._tasks``); none touches a layer: what they produce is handed back to the session on the GUI thread.

- every model call holds the predictor's own lock (shared with the console and the other widgets);
- a slice of a stack is embedded with the stack's ONE intensity range (read from a few slices, in the job);
- jobs check ``is_cancelled`` after every slice or tile, and report progress with the true number of steps
  (SAM 2's video propagation visits the prompted slice in both directions: n + 1 frames in all);
- propagation runs the same job body here or on a remote worker: only the callable doing the work differs.
"""
from __future__ import annotations

from typing import Any, Callable, Generator

import numpy as np

from .._tasks import Progress, blocking_with_progress
from .image_source import read_model_image
from .preview import SWEEP_G, PreviewRequest, PreviewResult

__all__ = ["embedding_order", "embed_job", "tile_embed_job", "propagation_job", "preview_job", "label_logits",
           "stack_intensity", "model_size", "TiledImage", "plan_embed", "segment_now", "object_prompt",
           "EMBED_BUDGET_BYTES", "SWEEP_MAX_PIXELS", "SWEEP_CHUNK"]

#: at most this many bytes of cached slice embeddings for "Embed all slices" (then the nearest slices first)
EMBED_BUDGET_BYTES = 1 << 30
#: sweep masks are kept only for images up to this many pixels (10 masks of this size stay in memory)
SWEEP_MAX_PIXELS = 4096 * 4096
#: decoded per call during the sweep (small, so a new click waits at most this many decoder passes)
SWEEP_CHUNK = 3


def stack_intensity(stack) -> tuple[float, float] | None:
    """One (lo, hi) range for all slices of a stack, read from a few slices (never the whole stack)."""
    from ...engine.normalize import stack_intensity_range

    return stack_intensity_range(stack)


def model_size(predictor) -> int:
    """The model's square input size in pixels (here or on the remote worker)."""
    return int(predictor.image_size)


def label_logits(region: np.ndarray, label_id: int, side: int) -> np.ndarray:
    """(1, side, side) float32 logits (+8 inside, -8 outside) of ``label_id`` in ``region``, sampled at the
    model's low-res mask size (``image_size // 4``) without reading the full-size slice."""
    h, w = region.shape[-2:]
    rows = ((np.arange(side) + 0.5) * h / side).astype(int)
    cols = ((np.arange(side) + 0.5) * w / side).astype(int)
    low = np.asarray(region[np.ix_(rows, cols)]) == label_id
    return np.where(low, 8.0, -8.0).astype(np.float32)[None]


def preview_job(predictor, tiles: "TiledImage | None", req: PreviewRequest, is_stale: Callable[[int], bool],
                local: bool = True) -> Callable[[Callable[[], bool]], Generator]:
    """The preview of ``req``: yields ("intensity", key, range) once per stack, a :class:`PreviewResult` for the
    exact mask, then ("sweep", req, g values, masks) chunks until the request is stale.

    tiles: the tiles over ``predictor`` when the image is tiled, else None. local: the predictor runs here
    (then a slow first embedding is announced).
    """
    lock = predictor.lock
    tile, choice = req.extra.get("tile"), req.extra.get("channel")
    image_key = (req.image_name, req.index, None if choice is None else choice.text, tile)
    sweep = (req.granularity is not None and req.mask_input is None
             and np.prod(np.shape(req.image)[:2]) <= SWEEP_MAX_PIXELS)

    def predict(image, g):
        with lock:
            if tiles is None:
                predictor.set_image(image, intensity=req.intensity)
                model = predictor
            else:  # tiles are embedded on demand and cached; the image is set once per image
                if tiles.image_key != image_key:
                    tiles.tiled.set_image(image, intensity=req.intensity)
                    tiles.image_key = image_key
                model = tiles.tiled
            pts = req.points_xy if len(req.points_xy) else None
            return model.predict(pts, req.point_labels if pts is not None else None, granularity=g,
                                 box=req.box, mask_input=req.mask_input)

    def job(is_cancelled):
        image = read_model_image(choice, req.image, req.extra.get("full"), req.extra.get("layer_data", ()))
        if "stack" in req.extra:
            req.intensity = stack_intensity(req.extra["stack"])
            yield ("intensity", req.extra["intensity_key"], req.intensity)
        if tiles is None and local and not predictor.is_cached(image, intensity=req.intensity):
            yield Progress(0, 0, "computing the embedding of this " + ("slice…" if req.index else "image…"))
        masks, ious, _ = predict(image, req.granularity)
        yield PreviewResult(req, masks[0].view(np.uint8), float(ious[0]), req.granularity)
        g0 = req.granularity
        rest = sorted((g for g in SWEEP_G if abs(g - g0) > 1e-6), key=lambda g: abs(g - g0)) if sweep else []
        for start in range(0, len(rest), SWEEP_CHUNK):
            if is_stale(req.serial) or is_cancelled():
                return None
            chunk = rest[start:start + SWEEP_CHUNK]
            masks, _, _ = predict(image, chunk)
            yield ("sweep", req, chunk, [m.view(np.uint8) for m in masks])
        return None

    return job


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
    lock = predictor.lock

    def job(is_cancelled):
        rng = stack_intensity(stack) if intensity is None else intensity  # read here, not on the GUI thread
        done = 0
        for i in order:
            if is_cancelled():
                return done
            image = np.asarray(stack[i])
            with lock:
                predictor.set_image(image, intensity=rng)
            done += 1
            yield Progress(done, len(order), f"embedded slice {i} ({done}/{len(order)})")
        return done

    return job


class TiledImage:
    """A ``TiledPredictor`` and the image it was last given (tiles embedded once are not embedded again)."""

    def __init__(self, tiled):
        self.tiled = tiled
        self.image_key: tuple | None = None


def tile_embed_job(tiles: TiledImage, image, intensity: tuple[float, float] | None = None
                   ) -> Callable[[Callable[[], bool]], Generator]:
    """A background job embedding every tile of ``image`` (read here) with ``tiles.tiled``; stops at the next
    tile when cancelled; returns how many tiles were embedded."""
    tiled = tiles.tiled
    lock = tiled.predictor.lock

    def job(is_cancelled):
        pixels = np.asarray(image)
        done = 0
        with lock:
            tiled.set_image(pixels, intensity=intensity)
        tiles.image_key = None  # the preview sets its own image again (cached tiles stay cached)
        steps = tiled.iter_embed_all(cancel=is_cancelled)
        while True:
            with lock:  # one tile per lock hold: a click's preview can run between tiles
                step = next(steps, None)
            if step is None:
                return done
            done, total = step
            yield Progress(done, total, f"embedded tile {done}/{total}")

    return job


def propagation_job(model, predictor, stack, prompt: Any, where: Any = None
                    ) -> Callable[[Callable[[], bool]], Generator]:
    """A background job propagating ``prompt`` (an ``ObjectPrompt``) through ``stack``; returns the label stack.

    where: None runs SAM 2's video path here (``model``; the stack is read per slice); a remote session runs
    it on that session's worker through ``predictor`` (the stack travels once). Progress counts the frames
    SAM 2 really runs: n + 1 (the prompted slice is visited in both directions). Cancel stops at the next
    frame (nothing is written).
    """
    from ...engine.propagate import propagate

    lock = predictor.lock if predictor is not None else None
    total = int(np.shape(stack)[0]) + 1

    def job(is_cancelled):
        def call(progress, cancel):
            def report(done, _engine_total):
                progress(min(int(done), total), total)

            if where is not None:
                return predictor.propagate(np.asarray(stack), prompt, progress=report, cancel=cancel)
            if lock is None:
                return propagate(model, stack, prompt, progress=report, cancel=cancel)  # read per slice
            with lock:
                return propagate(model, stack, prompt, progress=report, cancel=cancel)  # read per slice

        result = yield from blocking_with_progress(call, is_cancelled)
        return result

    return job


def plan_embed(predictor, info, current: int | None, tiles: TiledImage | None,
               intensity: tuple[float, float] | None, warn: Callable[[str], None]) -> tuple[Callable, str, str]:
    """(job, what: "slice" or "tile", message) of "Embed all" for ``info`` (an ``ImageInfo``): every tile of a
    tiled 2D image, or the slices of a stack nearest to ``current`` first, as many as the memory budget holds
    (``warn`` says so when not all fit)."""
    if tiles is not None:
        from ...engine.tiling import tile_windows

        n = len(tile_windows(info.hw, tiles.tiled.tile, tiles.tiled.overlap))
        return tile_embed_job(tiles, info.slice(())), "tile", f"embedding {n} tiles…"
    stack = info.stack()
    order, truncated = embedding_order(int(stack.shape[0]), current, model_size(predictor))
    if truncated:
        warn(f"embedding the {len(order)} slices nearest to the current one of {stack.shape[0]} (memory budget); "
             f"others are embedded on first use")
    predictor.cache.max_items = max(predictor.cache.max_items, len(order))
    return embed_job(predictor, stack, order, intensity), "slice", f"embedding {len(order)} slices…"


def segment_now(predictor, image, index: tuple[int, ...], stack, points_rc, labels, granularity):
    """One object from ``[(row, col), ...]`` on ``image`` in the calling thread (the console's path); returns
    (masks, ious, points_xy, point_labels, intensity)."""
    pts = np.asarray(points_rc, np.float32).reshape(-1, 2)[:, ::-1].copy()
    lab = np.ones(len(pts), np.int32) if labels is None else np.asarray(labels, np.int32).reshape(-1)
    intensity = stack_intensity(stack) if index else None
    with predictor.lock:
        predictor.set_image(np.asarray(image), intensity=intensity)
        masks, ious, _ = predictor.predict(pts, lab, granularity=granularity)
    return masks, ious, pts, lab, intensity


def object_prompt(rec):
    """The ``ObjectPrompt`` of a commit (a ``CommitRecord``): its clicks, box and g on its slice, its label id."""
    from ...engine.propagate import ObjectPrompt

    return ObjectPrompt(frame=rec.index[0], points=rec.points_xy.tolist(), labels=rec.point_labels.tolist(),
                        obj_id=rec.label_id, granularity=rec.granularity,
                        box=None if rec.box is None else rec.box.tolist())

"""Images far larger than the model, segmented at their own pixel scale (napari-free).

Why: SAM 2 sees a fixed square input (1024 px for the released models, 256 px for the demo). A 4096 px camera
frame squeezed into it loses every object smaller than ~4 pixels of model input, and a 20000 x 200 strip is
stretched beyond recognition. Tiling keeps the image's own pixels: the model looks at tile-sized windows
(tile = the model's input size by default), each embedded once and cached like any image.

- Interactive (:class:`TiledPredictor`): the prompts of one object are answered in the grid tile that holds
  them best (the one whose centre is closest to theirs), so precomputing all tiles
  (:meth:`TiledPredictor.embed_all`) makes every later click decoder-only; prompts that fit no grid tile get a
  window centred on them. Masks come back at the full image size.
- Segment everything (:func:`segment_everything_tiled`): every tile is segmented; an object touching a tile
  border that lies inside the image is cut there and is taken from a neighbouring tile, where the overlap
  holds it whole (objects up to ``overlap`` pixels wide are never cut); objects wider than that are stitched
  from their cut pieces; duplicates from overlapping tiles are merged by mask IoU.
- Windows smaller than a tile (a strip thinner than the tile) are padded to a square with the image's
  darkest level, never stretched; the padding is cropped off the masks.

One intensity range is used for all tiles of an image (the image's own, or the stack's), so a cell looks the
same to the model in every tile.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from .normalize import check_image, intensity_range

__all__ = ["SCALES", "Window", "tile_windows", "choose_scale", "check_scale", "check_tile", "default_overlap",
           "TiledPredictor", "segment_everything_tiled", "TilingError", "MIN_TILE"]

#: "auto": tile when the model would shrink the image more than :data:`MAX_SHRINK` times (or stretch it),
#: "tile": always at the image's own pixel scale, "downscale": the whole image squeezed into one model input.
SCALES = ("auto", "tile", "downscale")
#: Largest downscale factor "auto" accepts before it tiles: objects shrink at most 2x, as SAM 2 is trained on
#: photographs resized by about that much.
MAX_SHRINK = 2.0
#: Above this aspect ratio (long side / short side) "auto" tiles: squeezing a strip into a square stretches it.
MAX_ASPECT = 2.0
MIN_TILE = 8  #: smallest tile edge in pixels (smaller tiles hold no object a click could select)

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


class TilingError(ValueError):
    """Prompts or settings that tiling cannot serve, with what to do instead."""


@dataclass(frozen=True)
class Window:
    """A rectangle of the image, rows ``y0:y1`` and columns ``x0:x1`` (end exclusive)."""

    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def center(self) -> tuple[float, float]:
        return (self.y0 + self.y1) / 2.0, (self.x0 + self.x1) / 2.0

    def contains(self, y0: float, x0: float, y1: float, x1: float) -> bool:
        return self.y0 <= y0 and self.x0 <= x0 and y1 <= self.y1 - 1 and x1 <= self.x1 - 1


def default_overlap(tile: int) -> int:
    """A quarter of the tile: objects up to that size are whole in at least one tile."""
    return max(1, tile // 4)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def tile_windows(shape: Sequence[int], tile: int, overlap: int | None = None) -> list[Window]:
    """Row-major grid of ``tile`` x ``tile`` windows covering ``shape`` (H, W) with at least ``overlap`` px
    shared between neighbours; the last row/column is aligned to the image border (no partial tiles unless
    the image is smaller than a tile along that axis)."""
    h, w = int(shape[0]), int(shape[1])
    tile = check_tile(tile)
    overlap = default_overlap(tile) if overlap is None else int(overlap)
    if not 0 <= overlap < tile:
        raise TilingError(f"overlap={overlap} must be between 0 and tile - 1 = {tile - 1} pixels")
    return [Window(y, x, min(y + tile, h), min(x + tile, w))
            for y in _starts(h, tile, overlap) for x in _starts(w, tile, overlap)]


def check_scale(scale: str) -> str:
    """``scale`` if it is one of :data:`SCALES`, else a TilingError (API, CLI, batch and widgets call it)."""
    if not isinstance(scale, str) or scale not in SCALES:
        raise TilingError(f"scale={scale!r} is not one of {SCALES}: 'tile' keeps the image's own pixels, "
                          f"'downscale' fits the whole image into one model input, 'auto' picks by image size")
    return scale


def check_tile(tile) -> int | None:
    """The tile edge in whole pixels (>= :data:`MIN_TILE`) or None (the model's input size); else a TilingError
    naming the value (never a silent ``int()`` of a fraction or of a word)."""
    if tile is None:
        return None
    whole = isinstance(tile, (int, np.integer)) and not isinstance(tile, (bool, np.bool_)) or (
        isinstance(tile, (float, np.floating)) and np.isfinite(tile) and float(tile).is_integer())
    if not whole or int(tile) < MIN_TILE:
        raise TilingError(f"tile={tile!r}: give the tile size as a whole number of pixels (at least {MIN_TILE}, "
                          f"e.g. 1024), or None for the model's input size")
    return int(tile)


def choose_scale(shape: Sequence[int], model_size: int, scale: str = "auto") -> str:
    """"tile" or "downscale" for an image of ``shape`` (H, W) and a model of input size ``model_size``.

    "auto" keeps the downscaled whole-image view when objects shrink at most :data:`MAX_SHRINK` times and the
    image is not a strip; larger or elongated images are tiled. Say ``scale="downscale"`` when the objects
    are large compared with a tile (a whole organ in a slide), ``scale="tile"`` for small objects.
    """
    if check_scale(scale) != "auto":
        return scale
    h, w = int(shape[0]), int(shape[1])
    long_side, short_side = max(h, w), max(1, min(h, w))
    if long_side <= model_size:
        return "downscale"
    if long_side / model_size > MAX_SHRINK or long_side / short_side > MAX_ASPECT:
        return "tile"
    return "downscale"


def _pad_square(crop: np.ndarray, tile: int, fill: float) -> np.ndarray:
    h, w = crop.shape[:2]
    side = max(tile, h, w)
    if (h, w) == (side, side):
        return crop
    out = np.full((side, side) + crop.shape[2:], fill, dtype=crop.dtype)
    out[:h, :w] = crop
    return out


class TiledPredictor:
    """A :class:`~napari_granseg.engine.interactive.GranularityPredictor` at the image's own pixel scale.

    Same ``set_image`` / ``predict`` as the predictor (coordinates (x, y) in full-image pixels; it implements
    :class:`~napari_granseg.engine.protocols.Predictor` around any predictor, local or remote); masks come
    back at the full image size. ``low_res_logits`` are those of the tile used (:attr:`last_window`), so feed
    them back only for prompts answered in the same tile.
    """

    def __init__(self, predictor, tile: int | None = None, overlap: int | None = None):
        self.predictor = predictor
        self.tile = int(tile or predictor.image_size)
        self.overlap = default_overlap(self.tile) if overlap is None else int(overlap)
        tile_windows((self.tile, self.tile), self.tile, self.overlap)  # validates tile and overlap
        self._image: np.ndarray | None = None
        self._range: tuple[float, float] | None = None
        self._fill = 0.0
        self.windows: list[Window] = []
        self.last_window: Window | None = None

    @property
    def has_granularity(self) -> bool:
        return self.predictor.has_granularity

    @property
    def mask_threshold(self) -> float:
        return self.predictor.mask_threshold

    @property
    def image_size(self) -> int:
        return self.predictor.image_size

    @property
    def precision(self) -> str:
        return self.predictor.precision

    @property
    def lock(self):
        return self.predictor.lock

    @staticmethod
    def _range_of(image: np.ndarray, intensity) -> tuple[tuple[float, float] | None, float]:
        """(the one intensity range of every tile, the padding value): uint8 keeps its natural range."""
        if image.dtype == np.uint8 and intensity is None:
            return None, 0.0
        value = tuple(intensity) if intensity is not None else intensity_range(image)
        return value, value[0]

    def set_image(self, image: np.ndarray, intensity: tuple[float, float] | None = None) -> None:
        """Remember ``image`` and its intensity range; tiles are embedded on demand (or by :meth:`embed_all`)."""
        image = check_image(image)
        self._image = image
        self._range, self._fill = self._range_of(image, intensity)
        self.windows = tile_windows(image.shape[:2], self.tile, self.overlap)
        self.last_window = None

    def is_cached(self, image: np.ndarray, intensity: tuple[float, float] | None = None) -> bool:
        """True when every grid tile of ``image`` is embedded already (a click then costs only the decoder)."""
        image = check_image(image)
        value, fill = self._range_of(image, intensity)
        return all(self.predictor.is_cached(_pad_square(image[win.slices], self.tile, fill), intensity=value)
                   for win in tile_windows(image.shape[:2], self.tile, self.overlap))

    def _require_image(self) -> np.ndarray:
        if self._image is None:
            raise RuntimeError("no image set: call set_image(image) before predict(...)")
        return self._image

    def _set_window(self, window: Window) -> None:
        image = self._require_image()
        crop = _pad_square(image[window.slices], self.tile, self._fill)
        if self._range is None:
            self.predictor.set_image(crop)
        else:
            self.predictor.set_image(crop, intensity=self._range)
        self.last_window = window

    def window_for(self, y0: float, x0: float, y1: float, x1: float) -> Window:
        """The grid tile holding the box (rows y0..y1, cols x0..x1) closest to its centre, else a window
        centred on it. Raises :class:`TilingError` when the box is larger than a tile."""
        image = self._require_image()
        h, w = image.shape[:2]
        if y1 - y0 >= self.tile or x1 - x0 >= self.tile:
            raise TilingError(f"the prompts span {int(y1 - y0) + 1} x {int(x1 - x0) + 1} pixels, more than one "
                              f"tile ({self.tile} px): place the prompts of one object closer together, or use "
                              f"scale='downscale' for objects this large")
        cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
        holding = [win for win in self.windows if win.contains(y0, x0, y1, x1)]
        if holding:
            return min(holding, key=lambda win: (win.center[0] - cy) ** 2 + (win.center[1] - cx) ** 2)
        top = int(np.clip(round(cy - self.tile / 2), 0, max(0, h - self.tile)))
        left = int(np.clip(round(cx - self.tile / 2), 0, max(0, w - self.tile)))
        return Window(top, left, min(top + self.tile, h), min(left + self.tile, w))

    def predict(self, point_coords=None, point_labels=None, granularity=None, multimask_output: bool = False,
                mask_input=None, return_logits: bool = False, box=None, refine: bool = False):
        """Like :meth:`GranularityPredictor.predict`, in full-image coordinates; masks are (N, H, W)."""
        image = self._require_image()
        pts = None if point_coords is None else np.asarray(point_coords, dtype=np.float64).reshape(-1, 2)
        bx = None if box is None else np.asarray(box, dtype=np.float64).reshape(-1, 4)
        corners = [a for a in (pts, None if bx is None else bx.reshape(-1, 2)) if a is not None and len(a)]
        if not corners:
            raise TilingError("give at least one point (point_coords=[[x, y]]) or a box to segment an object")
        xy = np.concatenate(corners)
        window = self.window_for(xy[:, 1].min(), xy[:, 0].min(), xy[:, 1].max(), xy[:, 0].max())
        if window != self.last_window:
            if mask_input is not None:
                raise TilingError("mask_input belongs to another tile than these prompts: pass mask_input=None")
            self._set_window(window)
        shift = np.array([window.x0, window.y0], dtype=np.float64)
        masks, ious, low = self.predictor.predict(
            point_coords=None if pts is None else pts - shift, point_labels=point_labels, granularity=granularity,
            multimask_output=multimask_output, mask_input=mask_input, return_logits=return_logits,
            box=None if bx is None else bx - np.tile(shift, 2), refine=refine)
        h, w = image.shape[:2]
        wh, ww = window.y1 - window.y0, window.x1 - window.x0
        fill = np.float32(-32.0) if return_logits else False
        full = np.full((masks.shape[0], h, w), fill, dtype=masks.dtype)
        full[:, window.y0:window.y1, window.x0:window.x1] = masks[:, :wh, :ww]
        return full, ious, low

    def iter_embed_all(self, cancel: Cancel | None = None) -> Iterator[tuple[int, int]]:
        """Embed every grid tile (cached); yields (done, total) after each, so a worker can show progress."""
        self._require_image()
        cache = getattr(self.predictor, "cache", None)
        if cache is not None and hasattr(cache, "max_items"):
            cache.max_items = max(cache.max_items, len(self.windows) + 1)
        for i, window in enumerate(self.windows, start=1):
            if cancel is not None and cancel():
                return
            self._set_window(window)
            yield i, len(self.windows)

    def embed_all(self, progress: Progress | None = None, cancel: Cancel | None = None) -> int:
        """Embed every grid tile now; returns how many were embedded."""
        done = 0
        for done, total in self.iter_embed_all(cancel):
            if progress is not None:
                progress(done, total)
        return done


#: A mask is cut by a tile border when at least this many of its pixels lie on that border (a few stray
#: pixels of an upsampled low-res mask touching the edge do not make a cut object).
CUT_MIN_PIXELS = 4


def _is_cut(mask: np.ndarray, window: Window, shape: tuple[int, int]) -> bool:
    """True when ``mask`` (the tile's own frame) runs into a tile edge that is not an image edge."""
    h, w = shape
    edges = []
    if window.y0 > 0:
        edges.append(mask[0, :])
    if window.x0 > 0:
        edges.append(mask[:, 0])
    if window.y1 < h:
        edges.append(mask[-1, :])
    if window.x1 < w:
        edges.append(mask[:, -1])
    return any(int(edge.sum()) >= CUT_MIN_PIXELS for edge in edges)


@dataclass
class _Piece:
    """One object found in one tile: its mask cropped to its box, placed at (top, left) of the image."""

    top: int
    left: int
    mask: np.ndarray
    score: float
    window: Window
    cut: bool = False

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def crop(self, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """The piece's mask over image rows y0:y1, cols x0:x1 (False outside the piece's box)."""
        out = np.zeros((max(0, y1 - y0), max(0, x1 - x0)), bool)
        ty0, tx0 = max(y0, self.top), max(x0, self.left)
        ty1, tx1 = min(y1, self.top + self.mask.shape[0]), min(x1, self.left + self.mask.shape[1])
        if ty1 > ty0 and tx1 > tx0:
            out[ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0] = self.mask[ty0 - self.top:ty1 - self.top,
                                                                   tx0 - self.left:tx1 - self.left]
        return out

    def union(self, other: "_Piece") -> "_Piece":
        top, left = min(self.top, other.top), min(self.left, other.left)
        bottom = max(self.top + self.mask.shape[0], other.top + other.mask.shape[0])
        right = max(self.left + self.mask.shape[1], other.left + other.mask.shape[1])
        mask = self.crop(top, left, bottom, right) | other.crop(top, left, bottom, right)
        return _Piece(top, left, mask, max(self.score, other.score), self.window, cut=True)


def _iou_in(a: _Piece, b: _Piece, y0: int, x0: int, y1: int, x1: int) -> float:
    ia, ib = a.crop(y0, x0, y1, x1), b.crop(y0, x0, y1, x1)
    union = int((ia | ib).sum())
    return int((ia & ib).sum()) / union if union else 0.0


def _bounds(p: _Piece) -> tuple[int, int, int, int]:
    return p.top, p.left, p.top + p.mask.shape[0], p.left + p.mask.shape[1]


def _iou(a: _Piece, b: _Piece) -> float:
    (ay0, ax0, ay1, ax1), (by0, bx0, by1, bx1) = _bounds(a), _bounds(b)
    y0, x0, y1, x1 = min(ay0, by0), min(ax0, bx0), max(ay1, by1), max(ax1, bx1)
    if min(ay1, by1) <= max(ay0, by0) or min(ax1, bx1) <= max(ax0, bx0):
        return 0.0
    return _iou_in(a, b, y0, x0, y1, x1)


def _inside_fraction(a: _Piece, b: _Piece) -> float:
    """Share of ``a``'s pixels that ``b`` covers."""
    y0, x0, y1, x1 = _bounds(a)
    return float((a.mask & b.crop(y0, x0, y1, x1)).sum()) / max(1, a.area)


def _shared_iou(a: _Piece, b: _Piece) -> float:
    """IoU of two pieces inside the overlap of their tiles (where both tiles saw the object)."""
    y0, x0 = max(a.window.y0, b.window.y0), max(a.window.x0, b.window.x0)
    y1, x1 = min(a.window.y1, b.window.y1), min(a.window.x1, b.window.x1)
    if y1 <= y0 or x1 <= x0:
        return 0.0
    return _iou_in(a, b, y0, x0, y1, x1)


def _stitch(pieces: list[_Piece], iou_thresh: float) -> list[_Piece]:
    """Whole pieces first (best score first, duplicates by IoU dropped); then pieces cut by a tile border:
    dropped when a whole piece already holds them, else joined to the kept piece of the same object from a
    neighbouring tile (they agree where the two tiles overlap), else kept."""
    kept: list[_Piece] = []
    for piece in sorted((p for p in pieces if not p.cut), key=lambda p: -p.score):
        if all(_iou(piece, other) <= iou_thresh for other in kept):
            kept.append(piece)
    n_whole = len(kept)
    for piece in sorted((p for p in pieces if p.cut), key=lambda p: -p.area):
        if any(_iou(piece, o) > iou_thresh or _inside_fraction(piece, o) > 0.6 for o in kept[:n_whole]):
            continue
        for i, other in enumerate(kept):
            if other.window != piece.window and _shared_iou(piece, other) > iou_thresh:
                kept[i] = other.union(piece)
                break
        else:
            kept.append(piece)
    return kept


def segment_everything_tiled(predictor, image: np.ndarray, granularity: float | None = 0.5,
                             tile: int | None = None, overlap: int | None = None,
                             intensity: tuple[float, float] | None = None, progress: Progress | None = None,
                             cancel: Cancel | None = None, duplicate_iou: float = 0.5, **settings) -> np.ndarray:
    """Instance labels (int32, ids 1..n, larger objects painted first) of ``image`` segmented tile by tile.

    ``settings``: any segment-everything setting, applied within each tile (e.g. ``points_per_side``).
    Objects cut by an inner tile border are taken from the neighbouring tile that holds them whole; an object
    wider than the overlap (whole in no tile) is put together from its cut pieces, which agree where their
    tiles overlap; duplicates of one object from overlapping tiles (mask IoU > ``duplicate_iou``) are merged.
    """
    from .automatic import generate

    image = check_image(image)
    tiler = TiledPredictor(predictor, tile, overlap)
    tiler.set_image(image, intensity)
    windows = tiler.windows
    h, w = image.shape[:2]
    pieces: list[_Piece] = []
    for t, window in enumerate(windows):
        if cancel is not None and cancel():
            from .automatic import Cancelled

            raise Cancelled("segment everything was cancelled")
        crop = _pad_square(image[window.slices], tiler.tile, tiler._fill)
        wh, ww = window.y1 - window.y0, window.x1 - window.x0

        def tile_progress(done: int, total: int, t: int = t) -> None:
            if progress is not None:
                progress(t * total + done, len(windows) * total)

        records = generate(predictor, crop, granularity, progress=tile_progress, cancel=cancel,
                           intensity=tiler._range, **settings)
        for rec in records:
            mask = rec["segmentation"][:wh, :ww]
            if not mask.any():
                continue
            rows, cols = np.nonzero(mask)
            y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
            cut = _is_cut(mask, window, (h, w))
            pieces.append(_Piece(window.y0 + int(y0), window.x0 + int(x0), mask[y0:y1, x0:x1].copy(),
                                 float(rec["predicted_iou"]) * float(rec.get("stability_score", 1.0)),
                                 window, cut))
    kept = _stitch(pieces, duplicate_iou)
    labels = np.zeros((h, w), np.int32)
    for k, piece in enumerate(sorted(kept, key=lambda p: -p.area), start=1):
        region = labels[piece.top:piece.top + piece.mask.shape[0], piece.left:piece.left + piece.mask.shape[1]]
        region[piece.mask] = k
    present = np.unique(labels)
    present = present[present > 0]
    lut = np.zeros(len(kept) + 1, np.int32)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    return lut[labels]

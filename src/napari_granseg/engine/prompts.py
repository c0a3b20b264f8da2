"""Checking what users give as prompts (clicks, labels, boxes, granularity) before any model sees it.

Why a module of its own: the predictor, ``gs.segment`` and propagation take the same kinds of prompts, and a
prompt the engine did not understand must be an error that names the argument and says what to pass, never
a mask computed from something else (a NaN click, a napari (z, row, col) point read as two clicks, a label 2
read as a box corner, a granularity word turned into a numpy message).
"""
from __future__ import annotations

from numbers import Real
from typing import Sequence

import numpy as np

__all__ = ["PromptError", "as_points", "as_box", "as_granularities", "one_granularity", "sample_polyline"]


class PromptError(ValueError):
    """Bad clicks (outside the image, labels not 0/1, mismatched lengths), with the fix in the message."""


def _numeric(value, name: str, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PromptError(f"{name} must be {what}; got {value!r}") from None
    if not np.isfinite(arr).all():
        flat = arr.reshape(-1)
        raise PromptError(f"{name} contains NaN or infinite values ({flat[~np.isfinite(flat)][:4].tolist()}): "
                          f"give {what}, all finite")
    return arr


def as_points(point_coords, point_labels, hw: tuple[int, int]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(N, 2) float32 (x, y) pixel clicks inside an image of ``hw`` and (N,) int32 labels 0/1, or (None, None).

    Shapes are checked, not reshaped: (N, 3) napari points would otherwise become wrong clicks.
    """
    if point_coords is None:
        if point_labels is not None:
            raise PromptError("point_labels given without point_coords: give point_coords=[[x, y], ...] too")
        return None, None
    coords = _numeric(point_coords, "point_coords", "[[x, y], ...] pairs in pixels")
    if coords.size == 0:
        if point_labels is not None and np.asarray(point_labels).size:
            raise PromptError("point_labels given without points: point_coords is empty")
        return None, None
    if coords.ndim == 1 and coords.shape[0] == 2:
        coords = coords[None]
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise PromptError(f"point_coords must be (x, y) pairs shaped (N, 2), got shape {coords.shape}. Points of "
                          f"a 3D napari layer are (z, row, col): take one slice's points and pass "
                          f"points[:, [2, 1]] as (x, y)")
    if point_labels is None:
        labels = np.ones(len(coords), np.int32)
    else:
        raw = _numeric(point_labels, "point_labels", "1 (object) or 0 (background) per point").reshape(-1)
        if len(raw) != len(coords):
            raise PromptError(f"{len(coords)} points but {len(raw)} labels: give one label (1 = object, "
                              f"0 = background) per point")
        if not np.isin(raw, (0, 1)).all():
            raise PromptError(f"point_labels must be 1 (object) or 0 (background), got "
                              f"{sorted(set(raw.tolist()))}; give a box as box=[x0, y0, x1, y1], not as labels 2/3")
        labels = raw.astype(np.int32)
    h, w = hw
    outside = (coords[:, 0] < 0) | (coords[:, 0] > w - 1) | (coords[:, 1] < 0) | (coords[:, 1] > h - 1)
    if outside.any():
        raise PromptError(f"points {coords[outside].tolist()} lie outside the image of width {w} and height {h}; "
                          f"coordinates are (x, y) = (column, row) in pixels")
    return coords.astype(np.float32), labels


def as_box(box, hw: tuple[int, int]) -> np.ndarray | None:
    """(4,) float32 ``[x0, y0, x1, y1]`` in pixels, or None."""
    if box is None:
        return None
    arr = _numeric(box, "box", "[x0, y0, x1, y1] in pixels")
    if arr.size != 4:
        raise PromptError(f"box must be 4 numbers [x0, y0, x1, y1] in pixels, got shape {arr.shape}")
    arr = arr.reshape(4)
    if arr[2] < arr[0] or arr[3] < arr[1]:
        raise PromptError(f"box {arr.tolist()} has x1 < x0 or y1 < y0: give [x0, y0, x1, y1] (top-left, "
                          f"bottom-right) in pixels")
    return arr.astype(np.float32)


def as_granularities(granularity, n: int | None = None, name: str = "granularity") -> np.ndarray:
    """float32 granularity values in [0.1, 1] from a number or a sequence of numbers.

    ``n``: when given, a sequence must have exactly ``n`` values (one per point) and a number is repeated.
    """
    def bad(reason: str) -> PromptError:
        return PromptError(f"{name}={granularity!r} {reason}: give a number in [0.1, 1] (0.1 = finest parts, "
                           f"1.0 = whole objects) or a list of such numbers")

    if granularity is None:
        raise bad("is not a value")
    if isinstance(granularity, (str, bytes)):
        raise bad("is a word, not a number")
    if isinstance(granularity, (Real, np.number)) and not isinstance(granularity, bool):
        values = np.asarray([float(granularity)], np.float64)
    elif isinstance(granularity, (Sequence, np.ndarray)) or hasattr(granularity, "__array__"):
        try:
            values = np.asarray(granularity, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise bad("holds something that is not a number") from None
        if values.size == 0:
            raise bad("is empty")
        if n is not None and values.size not in (1, n):
            raise PromptError(f"{name} has {values.size} values for {n} points: give one value for all points "
                              f"or exactly one per point")
    else:
        raise bad(f"is a {type(granularity).__name__}")
    outside = values[~np.isfinite(values) | (values < 0.1 - 1e-6) | (values > 1.0 + 1e-6)]
    if outside.size:
        raise PromptError(f"{name} {outside.tolist()} is outside [0.1, 1]: 0.1 = finest parts, 1.0 = whole "
                          f"objects. Pick a value in that range.")
    if n is not None and values.size == 1:
        values = np.repeat(values, n)
    return values.astype(np.float32)


def one_granularity(granularity, name: str = "granularity", lists: str = "") -> float:
    """ONE granularity in [0.1, 1] by :func:`as_granularities`' rule; a list is refused by name (``lists``:
    where a list is taken instead, for the message)."""
    if isinstance(granularity, (list, tuple)) or getattr(granularity, "ndim", 0):
        raise PromptError(f"{name}={granularity!r}: give one number in [0.1, 1] (0.1 = finest parts, 1.0 = whole "
                          f"objects)" + (f"; {lists}" if lists else ""))
    as_granularities(granularity, name=name)
    return float(granularity)  # the value given (not its float32 copy): 0.3 stays 0.3 in records and fingerprints


def sample_polyline(vertices: np.ndarray, n: int, closed: bool = False) -> np.ndarray:
    """``n`` points evenly spaced along a polyline (a scribble: the widgets turn it into clicks this way).

    Open lines keep both ends; ``closed`` walks the outline back to the first vertex (a polygon) without
    repeating it. Coordinates are returned in the order given ((x, y) or (row, col)).
    """
    v = np.asarray(vertices, float).reshape(-1, 2)
    pts = np.concatenate([v, v[:1]]) if closed else v
    if len(pts) == 1:
        return pts
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    if cum[-1] == 0:
        return pts[:1]
    at = np.linspace(0.0, cum[-1], n, endpoint=not closed)
    return np.stack([np.interp(at, cum, pts[:, 0]), np.interp(at, cum, pts[:, 1])], axis=1)


def remote_hint(cls_name: str, opener: str, scheduler) -> str:
    """The message for ``GranularityPredictor(..., scheduler=...)``: the engine classes run here; where they run
    is chosen when they are opened (``napari_granseg.compute``), which returns the same interface."""
    return (f"{cls_name} runs on this machine; for a GPU worker at {scheduler!r} open it with "
            f"napari_granseg.compute.{opener}(model, where={scheduler!r}) (same calls, same results; "
            f"docs/remote.md)")

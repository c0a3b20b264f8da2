"""The click simulator of the standard interactive-segmentation protocol (RITM / isegm ``Clicker``).

Why re-implemented: every NoC number in the papers (RITM, SimpleClick, GraCo, UnSAMv2) comes from this rule,
so ours must place the same clicks. The next click goes to the pixel of the error region farthest from that
region's boundary: exact Euclidean distance transform of the false-negative and false-positive masks, each
padded by one pixel of zeros so the image border counts as boundary; positive when the false-negative maximum
is strictly larger, negative otherwise; already clicked pixels are excluded; ties go to the first pixel in
row-major order (as ``np.where(...)[0]``). Pixels in the ignore region never count as errors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["Click", "Clicker", "next_click"]


@dataclass(frozen=True)
class Click:
    """One simulated click: ``row``, ``col`` in pixels; ``positive`` True for the object, False for background."""

    row: int
    col: int
    positive: bool

    @property
    def xy(self) -> tuple[int, int]:
        """(x, y) = (col, row), the order of SAM 2's ``point_coords``."""
        return self.col, self.row


def _inner_distance(mask: np.ndarray) -> np.ndarray:
    """Distance of each True pixel to the nearest False pixel, the outside of the image counting as False."""
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.float64)
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    return ndimage.distance_transform_edt(padded)[1:-1, 1:-1]


def next_click(gt: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None,
               not_clicked: np.ndarray | None = None) -> Click:
    """The click the standard protocol makes after prediction ``pred`` for object ``gt`` (both HxW bool)."""
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from the ground truth's {gt.shape}")
    valid = np.ones_like(gt) if ignore is None else ~np.asarray(ignore, dtype=bool)
    fn = gt & ~pred & valid
    fp = ~gt & pred & valid
    fn_dt = _inner_distance(fn)
    fp_dt = _inner_distance(fp)
    if not_clicked is not None:
        fn_dt = fn_dt * not_clicked
        fp_dt = fp_dt * not_clicked
    fn_max, fp_max = fn_dt.max(), fp_dt.max()
    positive = bool(fn_max > fp_max)
    dt, best = (fn_dt, fn_max) if positive else (fp_dt, fp_max)
    rows, cols = np.nonzero(dt == best)
    return Click(int(rows[0]), int(cols[0]), positive)


class Clicker:
    """Clicks for one object, accumulated over the rounds of one simulation (like isegm's ``Clicker``)."""

    def __init__(self, gt: np.ndarray, ignore: np.ndarray | None = None):
        self.gt = np.asarray(gt, dtype=bool)
        if not self.gt.any():
            raise ValueError("the ground-truth mask is empty: an object needs at least one pixel")
        self.ignore = None if ignore is None else np.asarray(ignore, dtype=bool)
        self.reset()

    def reset(self) -> None:
        """Forget all clicks (a new simulation on the same object, e.g. another granularity)."""
        self.clicks: list[Click] = []
        self._not_clicked = np.ones(self.gt.shape, dtype=bool)

    def make_next_click(self, pred: np.ndarray) -> Click:
        """Add and return the next click given the current prediction (all False before the first click)."""
        click = next_click(self.gt, pred, self.ignore, self._not_clicked)
        self.clicks.append(click)
        self._not_clicked[click.row, click.col] = False
        return click

    def prompts(self) -> tuple[np.ndarray, np.ndarray]:
        """``point_coords`` (N, 2) in (x, y) pixels and ``point_labels`` (N,) 1/0, in click order."""
        coords = np.array([c.xy for c in self.clicks], dtype=np.float32).reshape(-1, 2)
        labels = np.array([1 if c.positive else 0 for c in self.clicks], dtype=np.int32)
        return coords, labels

"""Fakes for the evaluation tests: predictors whose masks are known shapes around the clicks."""
from __future__ import annotations

import numpy as np
import pytest


def disc(shape, center_rc, radius):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return (rr - center_rc[0]) ** 2 + (cc - center_rc[1]) ** 2 <= radius ** 2


def square(shape, center_rc, half):
    out = np.zeros(shape, dtype=bool)
    r, c = center_rc
    out[max(r - half, 0): r + half + 1, max(c - half, 0): c + half + 1] = True
    return out


class ShapePredictor:
    """Predicts the union of a shape around each positive click minus shapes around negative clicks.

    ``size(g)`` gives the shape's radius (disc) or half side (square) for granularity g (None -> ``default``).
    Returns logits +10 inside, -10 outside; low-res logits are the full-res logits (the loop only feeds them
    back). Records every call.
    """

    def __init__(self, shape_fn=disc, size=lambda g: 5, granular=True):
        self.shape_fn = shape_fn
        self.size = size
        self.granular = granular
        self.calls: list[dict] = []
        self.images_set = 0

    def set_image(self, image):
        self.hw = np.asarray(image).shape[:2]
        self.images_set += 1

    def predict(self, point_coords=None, point_labels=None, multimask_output=False, mask_input=None,
                return_logits=False, **kwargs):
        if not self.granular:
            assert "granularity" not in kwargs
        g = kwargs.get("granularity")
        self.calls.append({"coords": np.asarray(point_coords).copy(), "labels": np.asarray(point_labels).copy(),
                           "mask_input": None if mask_input is None else np.asarray(mask_input).copy(),
                           "granularity": g, "multimask": multimask_output})
        m = np.zeros(self.hw, dtype=bool)
        for (x, y), lab in zip(point_coords, point_labels):
            s = self.shape_fn(self.hw, (int(y), int(x)), self.size(g))
            m = m | s if lab == 1 else m & ~s
        logits = np.where(m, 10.0, -10.0).astype(np.float32)[None]
        masks = logits if return_logits else logits > 0
        return masks, np.array([0.9], np.float32), logits.copy()


@pytest.fixture
def shape_predictor():
    return ShapePredictor


@pytest.fixture
def disc_fn():
    return disc


@pytest.fixture
def square_fn():
    return square

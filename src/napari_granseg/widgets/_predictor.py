"""How the interactive widget talks to :class:`~napari_granseg.engine.interactive.GranularityPredictor`.

Why a module: the widget, its preview worker and its stack actions share one predictor with the napari
console; every model call goes through the predictor's own lock, and a slice of a stack is embedded with the
stack's intensity range (the engines' one normalisation policy).
"""
from __future__ import annotations

import threading

import numpy as np

__all__ = ["make_predictor", "predictor_lock", "set_image", "is_cached", "stack_intensity", "model_size"]


def make_predictor(loaded, precision: str = "auto", cache_size: int = 8):
    """A GranularityPredictor for ``loaded`` at ``precision`` ("auto", "fp32", "bf16") on this machine."""
    from ._compute import make_predictor as make

    return make(loaded, precision, None, cache_size)


def predictor_lock(predictor) -> threading.RLock:
    """The lock every call on ``predictor`` takes (shared with the console and other widgets)."""
    return predictor.lock


def set_image(predictor, image: np.ndarray, intensity: tuple[float, float] | None = None) -> None:
    """``predictor.set_image`` with the stack's intensity range (None: a single image, its own range)."""
    predictor.set_image(image, intensity=intensity)


def is_cached(predictor, image: np.ndarray, intensity: tuple[float, float] | None = None) -> bool:
    return bool(predictor.is_cached(image, intensity=intensity))


def stack_intensity(stack) -> tuple[float, float] | None:
    """One (lo, hi) range for all slices of a stack, read from a few slices (never the whole stack)."""
    from ..engine.normalize import stack_intensity_range

    return stack_intensity_range(stack)


def model_size(predictor) -> int | None:
    """The model's square input size in pixels; None when it is not known here (a predictor on a remote worker)."""
    model = getattr(predictor, "model", None)
    size = getattr(model, "image_size", None)
    return None if size is None else int(size)

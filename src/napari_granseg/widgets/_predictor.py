"""How the interactive widget talks to :class:`~napari_granseg.engine.interactive.GranularityPredictor`.

Why a module: the widget, its preview worker and its stack actions share one predictor with the napari
console; every model call goes through the predictor's lock (``predictor.lock`` when the engine provides it,
else one lock per predictor kept here), and the optional engine arguments (``precision``, a stack-wide
``intensity`` range) are passed only when the installed engine accepts them, so the widget works with both.
"""
from __future__ import annotations

import inspect
import threading
import weakref
from typing import Any

import numpy as np

__all__ = ["make_predictor", "predictor_lock", "set_image", "is_cached", "stack_intensity", "accepts"]

_LOCKS: "weakref.WeakKeyDictionary[Any, threading.RLock]" = weakref.WeakKeyDictionary()


def accepts(fn, name: str) -> bool:
    """Whether callable ``fn`` has a parameter called ``name`` (not only ``**kwargs``)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def make_predictor(loaded, precision: str = "auto", cache_size: int = 8):
    """A GranularityPredictor for ``loaded`` at ``precision`` ("auto", "fp32", "bf16")."""
    from ..engine.interactive import GranularityPredictor

    if accepts(GranularityPredictor.__init__, "precision"):
        return GranularityPredictor(loaded, cache_size=cache_size, precision=precision)
    if precision == "fp32":  # older engine: fp32 = no autocast
        return GranularityPredictor(loaded, cache_size=cache_size, autocast=False)
    return GranularityPredictor(loaded, cache_size=cache_size)


def predictor_lock(predictor) -> threading.RLock:
    """The lock every call on ``predictor`` takes (shared with the console and other widgets)."""
    lock = getattr(predictor, "lock", None)
    if lock is not None:
        return lock
    if predictor not in _LOCKS:
        _LOCKS[predictor] = threading.RLock()
    return _LOCKS[predictor]


def set_image(predictor, image: np.ndarray, intensity: tuple[float, float] | None = None) -> None:
    """``predictor.set_image`` with the stack's intensity range when the engine takes one."""
    if intensity is not None and accepts(predictor.set_image, "intensity"):
        predictor.set_image(image, intensity=intensity)
    else:
        predictor.set_image(image)


def is_cached(predictor, image: np.ndarray, intensity: tuple[float, float] | None = None) -> bool:
    if intensity is not None and accepts(predictor.is_cached, "intensity"):
        return bool(predictor.is_cached(image, intensity=intensity))
    return bool(predictor.is_cached(image))


def stack_intensity(stack) -> tuple[float, float]:
    """One (lo, hi) range for all slices of a stack (the engine's percentile policy, on a subsample)."""
    from ..engine.normalize import intensity_range

    return intensity_range(np.asarray(stack))

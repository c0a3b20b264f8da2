"""Granularity of a mask within its instance's hierarchy (UnSAMv2 pseudo-label step 4).

Why square roots: granularity should track the *linear* size of a part relative to its object, so that a
part a quarter the area of its instance sits half-way, not three quarters of the way, down the scale.
The UnSAMv2 trainer reuses :func:`granularity_of_areas` so labels and training agree on one formula.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["granularity_of_areas", "granularity_by_instance", "G_MIN", "G_MAX", "G_FALLBACK"]

G_MIN = 0.1
G_MAX = 1.0
G_FALLBACK = 0.5


def granularity_of_areas(areas: Sequence[float]) -> np.ndarray:
    """Return one granularity per area of one instance's set (the instance and its parts), in any order.

    ``g = 0.1 + 0.9 * (sqrt(A) - sqrt(Amin)) / (sqrt(Amax) - sqrt(Amin))``. The largest mask (the instance)
    gets exactly 1.0, a lone instance (no parts) gets 1.0, and when all areas are equal (no range to scale
    by) every mask but the first largest gets the fallback 0.5.
    """
    a = np.clip(np.asarray(areas, dtype=np.float64).reshape(-1), 0.0, None)
    if a.size == 0:
        return np.zeros(0, dtype=np.float32)
    r = np.sqrt(a)
    lo, hi = float(r.min()), float(r.max())
    if hi - lo <= 1e-12:
        g = np.full(a.size, G_FALLBACK)
    else:
        g = G_MIN + (G_MAX - G_MIN) * (r - lo) / (hi - lo)
    g[int(np.argmax(a))] = G_MAX
    return np.clip(g, G_MIN, G_MAX).astype(np.float32)


def granularity_by_instance(instance_ids: Sequence[int], areas: Sequence[float]) -> np.ndarray:
    """Granularity of every mask, computed separately within each instance's set (same ``instance_id``)."""
    ids = np.asarray(instance_ids).reshape(-1)
    a = np.asarray(areas, dtype=np.float64).reshape(-1)
    if ids.shape != a.shape:
        raise ValueError(f"instance_ids and areas differ in length ({ids.size} vs {a.size}).")
    out = np.zeros(a.size, dtype=np.float32)
    for inst in np.unique(ids):
        sel = np.flatnonzero(ids == inst)
        out[sel] = granularity_of_areas(a[sel])
    return out

"""Synthetic image domains the demo model never saw, with instance labels: for fine-tuning tests and benchmarks.

Why two: the fine-tuning recipe is chosen on one (:func:`dark_blobs_scene`, used by the tests) and measured on
the other (:func:`membrane_cells_scene`, used by ``benchmarks/finetune.py``), so the benchmark's numbers are not
tuned on the domain they report. Both differ from the demo's training data (bright nested ellipses on a dark
background): dark textured blobs on a bright background, and cells seen only by their bright membranes.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["dark_blobs_scene", "membrane_cells_scene"]


def _blob(shape, center, radius, rng, lobes: int = 5, wobble: float = 0.3) -> np.ndarray:
    rr, cc = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    ang = np.arctan2(rr - center[0], cc - center[1])
    r = radius * (1 + sum(rng.uniform(-wobble, wobble) / (k + 1) * np.cos((k + 2) * ang + rng.uniform(0, 6.3))
                          for k in range(lobes)))
    return np.hypot(rr - center[0], cc - center[1]) <= r


def dark_blobs_scene(size: int = 128, n_objects: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dark, irregular, lobed objects on a bright, grainy background (phase-contrast-like), uint16, with labels."""
    rng = np.random.default_rng(seed)
    shape = (size, size)
    labels = np.zeros(shape, np.int32)
    for _ in range(200):
        if labels.max() >= n_objects:
            break
        radius = rng.uniform(0.07, 0.13) * size
        center = rng.uniform(radius * 1.4, size - radius * 1.4, size=2)
        m = _blob(shape, center, radius, rng)
        if (ndimage.binary_dilation(m, iterations=3) & (labels > 0)).any():
            continue
        labels[m] = labels.max() + 1
    img = 30000 + 4000 * ndimage.gaussian_filter(rng.normal(0, 1, shape), 2) * 3
    for k in range(1, labels.max() + 1):
        m = labels == k
        img[m] = rng.uniform(6000, 12000) + 3000 * rng.normal(0, 1, m.sum())
        rim = ndimage.binary_dilation(m, iterations=2) & ~m
        img[rim] = 45000  # the bright halo of phase contrast
    img = rng.normal(img, 1500)
    return np.clip(img, 0, 65535).astype(np.uint16), labels


def membrane_cells_scene(size: int = 128, n_cells: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cells packed like an epithelium, seen only by their bright membranes (dim interiors), uint16, with labels.

    The cells are the Voronoi regions of random seeds inside a tissue patch; each label is a cell's interior
    and its membrane (what a person labelling whole cells paints).
    """
    rng = np.random.default_rng(seed)
    shape = (size, size)
    seeds = rng.uniform(0.15 * size, 0.85 * size, size=(n_cells, 2))
    rr, cc = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    dist = np.stack([np.hypot(rr - r, cc - c) for r, c in seeds])
    owner = dist.argmin(0)
    nearest = np.sort(dist, axis=0)
    tissue = nearest[0] < 0.2 * size
    labels = np.where(tissue, owner + 1, 0).astype(np.int32)
    membrane = ((nearest[1] - nearest[0]) < 2.0) & tissue | (tissue & ~ndimage.binary_erosion(tissue, iterations=2))
    img = np.full(shape, 2000.0) + 800 * ndimage.gaussian_filter(rng.normal(0, 1, shape), 1.5)
    for k in range(1, n_cells + 1):
        img[labels == k] = rng.uniform(4000, 7000)
    img[membrane] = rng.uniform(25000, 35000)
    img = ndimage.gaussian_filter(img, 0.7)
    img = rng.normal(img, np.sqrt(img) * 8)
    keep = [k for k in range(1, n_cells + 1) if (labels == k).sum() >= 30]
    labels = np.where(np.isin(labels, keep), labels, 0)
    return np.clip(img, 0, 65535).astype(np.uint16), labels

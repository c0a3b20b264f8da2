"""Synthetic image domains the demo model never saw, with instance labels: for fine-tuning tests and benchmarks.

Why several: the fine-tuning recipe is chosen on one (:func:`dark_blobs_scene`, used by the tests) and measured
on the others (:func:`membrane_cells_scene` and :func:`rod_cells_scene`, used by ``benchmarks/finetune.py``), so
the benchmark's numbers are not tuned on the domains they report. All differ from the demo's training data
(bright nested ellipses on a dark background): dark textured blobs on a bright background, cells seen only by
their bright membranes, and rod-shaped bacteria lying side by side under uneven illumination.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["dark_blobs_scene", "membrane_cells_scene", "rod_cells_scene"]


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


def _rod(shape, centre, length: float, width: float, angle: float) -> np.ndarray:
    """A capsule (a rod with round ends): the pixels within ``width / 2`` of a segment of ``length``."""
    rr, cc = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    d = np.array([np.sin(angle), np.cos(angle)], np.float32) * (length - width) / 2
    a, b = np.asarray(centre, np.float32) - d, np.asarray(centre, np.float32) + d
    ab = b - a
    t = np.clip(((rr - a[0]) * ab[0] + (cc - a[1]) * ab[1]) / max(float(ab @ ab), 1e-6), 0, 1)
    return np.hypot(rr - (a[0] + t * ab[0]), cc - (a[1] + t * ab[1])) <= width / 2


def rod_cells_scene(size: int = 128, n_rods: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rod-shaped bacteria, bright on dark, many lying side by side or end to end (touching with at most a
    one-pixel gap), under uneven illumination and shot noise, uint16, with labels.

    Half of the rods are placed beside an earlier one (parallel, a width apart), as dividing bacteria lie;
    the rest anywhere they fit.
    """
    rng = np.random.default_rng(seed)
    shape = (size, size)
    labels = np.zeros(shape, np.int32)
    rods: list[tuple[np.ndarray, float, float, float]] = []
    for _ in range(400):
        if len(rods) >= n_rods:
            break
        length, width = rng.uniform(0.16, 0.28) * size, rng.uniform(0.06, 0.085) * size
        if rods and rng.random() < 0.5:
            c0, l0, w0, a0 = rods[int(rng.integers(len(rods)))]
            side = rng.choice([-1.0, 1.0])
            if rng.random() < 0.6:  # beside it
                normal = np.array([np.cos(a0), -np.sin(a0)]) * side * ((w0 + width) / 2 + 1)
                centre, angle = c0 + normal + rng.normal(0, 0.03 * size, 2) * np.array([np.sin(a0), np.cos(a0)]), a0
            else:  # end to end
                along = np.array([np.sin(a0), np.cos(a0)]) * side * ((l0 + length) / 2 + 1)
                centre, angle = c0 + along, a0 + rng.normal(0, 0.15)
        else:
            centre, angle = rng.uniform(0.1 * size, 0.9 * size, 2), rng.uniform(0, np.pi)
        m = _rod(shape, centre, length, width, angle)
        if m.sum() < 0.6 * length * width or (m & ndimage.binary_dilation(labels > 0)).any():
            continue  # cut by the border, or overlapping (touching across a one-pixel gap is allowed)
        labels[m] = len(rods) + 1
        rods.append((np.asarray(centre, float), length, width, angle))
    rr, cc = np.mgrid[: shape[0], : shape[1]].astype(np.float32) / size
    light = 0.6 + 0.4 * np.cos(rng.uniform(0, 6.3) + 2.5 * (rr * rng.uniform(-1, 1) + cc * rng.uniform(-1, 1)))
    img = np.full(shape, 1500.0)
    for k in range(1, labels.max() + 1):
        m = labels == k
        inner = ndimage.distance_transform_edt(m)
        img[m] += rng.uniform(9000, 16000) * np.clip(inner[m] / 3.0, 0.35, 1.0)  # dimmer towards the rim
    img = ndimage.gaussian_filter(img * light, 0.8)
    img = rng.normal(img, np.sqrt(img) * 10)
    return np.clip(img, 0, 65535).astype(np.uint16), labels

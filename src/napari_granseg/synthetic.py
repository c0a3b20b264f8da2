"""Synthetic microscopy-like scenes with a known part-whole hierarchy (napari-free).

Why: no real data can be downloaded here, yet the plugin must show real segmentation offline and its tests
must check behaviour. Each scene holds cells that contain a nucleus that contains a nucleolus, so a click on
a nucleolus has three right answers, one per granularity. The same generator feeds the demo model's training
(``granseg_training``), the sample data in napari and the behavioural tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["NestedScene", "nested_cells_scene", "nested_cells_stack", "shapes_scene", "LEVEL_NAMES"]

LEVEL_NAMES = ("nucleolus", "nucleus", "cell")


@dataclass
class NestedScene:
    """image: uint16 (H, W). masks[level][i]: bool mask of object i at level (0 nucleolus, 1 nucleus, 2 cell)."""

    image: np.ndarray
    masks: list[list[np.ndarray]] = field(default_factory=list)
    centers: list[tuple[float, float]] = field(default_factory=list)  # (row, col) of each nucleolus

    def labels(self, level: int) -> np.ndarray:
        """Instance label image of one level (ids 1..n)."""
        out = np.zeros(self.image.shape, np.int32)
        for i, m in enumerate(self.masks[level], start=1):
            out[m] = i
        return out


def _ellipse(shape, center, radii, angle):
    rr, cc = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    dr, dc = rr - center[0], cc - center[1]
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = dr * ca + dc * sa, -dr * sa + dc * ca
    return (u / radii[0]) ** 2 + (v / radii[1]) ** 2 <= 1.0


def nested_cells_scene(size: int = 128, n_cells: int = 2, seed: int | None = 0,
                       rng: np.random.Generator | None = None, max_tries: int = 200) -> NestedScene:
    """A gray 16-bit image with ``n_cells`` non-overlapping cells, each with a nucleus and a nucleolus.

    Intensities (before noise): background ~ 1000, cell ~ 9000, nucleus ~ 20000, nucleolus ~ 40000, with
    per-object jitter, a smooth illumination gradient and Poisson-like noise, as in widefield fluorescence.
    """
    rng = rng if rng is not None else np.random.default_rng(seed)
    shape = (size, size)
    occupied = np.zeros(shape, bool)
    levels: list[list[np.ndarray]] = [[], [], []]
    centers = []
    img = np.full(shape, 1000.0, np.float32)
    tries = 0
    while len(levels[2]) < n_cells and tries < max_tries:
        tries += 1
        r_cell = rng.uniform(0.16, 0.26) * size / max(1.0, np.sqrt(n_cells / 2))
        center = rng.uniform(r_cell + 2, size - r_cell - 2, size=2)
        angle = rng.uniform(0, np.pi)
        cell = _ellipse(shape, center, (r_cell, r_cell * rng.uniform(0.7, 1.0)), angle)
        if (cell & occupied).any():
            continue
        grown = _ellipse(shape, center, (r_cell + 3, r_cell + 3), 0.0)
        occupied |= grown
        r_nuc = r_cell * rng.uniform(0.45, 0.6)
        offset = rng.uniform(-0.2, 0.2, size=2) * r_cell
        c_nuc = center + offset
        nucleus = _ellipse(shape, c_nuc, (r_nuc, r_nuc * rng.uniform(0.75, 1.0)), rng.uniform(0, np.pi)) & cell
        r_nol = r_nuc * rng.uniform(0.3, 0.42)
        c_nol = c_nuc + rng.uniform(-0.25, 0.25, size=2) * r_nuc
        nucleolus = _ellipse(shape, c_nol, (r_nol, r_nol), 0.0) & nucleus
        if nucleolus.sum() < 4:
            continue
        img[cell] = 9000 * rng.uniform(0.8, 1.2)
        img[nucleus] = 20000 * rng.uniform(0.8, 1.2)
        img[nucleolus] = 40000 * rng.uniform(0.8, 1.2)
        for lvl, m in enumerate((nucleolus, nucleus, cell)):
            levels[lvl].append(m)
        rows, cols = np.nonzero(nucleolus)
        centers.append((float(rows.mean()), float(cols.mean())))
    gy, gx = np.mgrid[0:1:size * 1j, 0:1:size * 1j]
    img *= (0.85 + 0.3 * (gy * rng.uniform(-1, 1) + gx * rng.uniform(-1, 1)) / 2 + 0.15).astype(np.float32)
    img = rng.normal(img, np.sqrt(img) * 4.0)
    image = np.clip(img, 0, 65535).astype(np.uint16)
    return NestedScene(image=image, masks=levels, centers=centers)


def nested_cells_stack(n_slices: int = 8, size: int = 128, seed: int = 0, drift: float = 1.0,
                       n_cells: int = 1) -> tuple[np.ndarray, list[NestedScene]]:
    """A z/t stack (n_slices, size, size) uint16 of one slowly drifting scene (for propagation demos/tests)."""
    rng = np.random.default_rng(seed)
    base = nested_cells_scene(size=size, n_cells=n_cells, rng=rng)
    slices, scenes = [], []
    for z in range(n_slices):
        shift = int(round(z * drift)) - int(round(n_slices * drift / 2))
        img = np.roll(base.image, shift, axis=1)
        masks = [[np.roll(m, shift, axis=1) for m in lvl] for lvl in base.masks]
        centers = [(r, c + shift) for r, c in base.centers]
        slices.append(img)
        scenes.append(NestedScene(image=img, masks=masks, centers=centers))
    return np.stack(slices), scenes


def shapes_scene(size: int = 128, n_objects: int = 4, seed: int | None = 0,
                 rng: np.random.Generator | None = None,
                 radius: tuple[float, float] = (0.08, 0.16)) -> tuple[np.ndarray, np.ndarray]:
    """Discs (class 1) and triangles (class 2) of varied size and texture; returns (uint16 image, class labels).

    Used by few-shot (SANSA) sample data and tests: the two classes differ by shape, not only intensity.
    """
    rng = rng if rng is not None else np.random.default_rng(seed)
    shape = (size, size)
    labels = np.zeros(shape, np.int32)
    img = rng.normal(2000, 300, shape).astype(np.float32)
    rr, cc = np.mgrid[:size, :size].astype(np.float32)
    classes = [1, 2] + list(rng.integers(1, 3, size=max(0, n_objects - 2)))
    for cls in classes:
        for _ in range(100):
            r = rng.uniform(*radius) * size
            c = rng.uniform(r + 1, size - r - 1, size=2)
            if cls == 1:
                m = (rr - c[0]) ** 2 + (cc - c[1]) ** 2 <= r ** 2
            else:
                a = rng.uniform(0, 2 * np.pi)
                pts = [(c[0] + r * np.sin(a + k * 2 * np.pi / 3), c[1] + r * np.cos(a + k * 2 * np.pi / 3)) for k in range(3)]
                m = np.ones(shape, bool)
                for k in range(3):
                    (y0, x0), (y1, x1) = pts[k], pts[(k + 1) % 3]
                    (y2, x2) = pts[(k + 2) % 3]
                    side = (x1 - x0) * (rr - y0) - (y1 - y0) * (cc - x0)
                    ref = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
                    m &= side * ref >= 0
            if (m & (labels > 0)).any() or m.sum() < 10:
                continue
            labels[m] = cls
            texture = rng.uniform(0.0, 0.3) * np.sin(rr / rng.uniform(2, 6)) * np.sin(cc / rng.uniform(2, 6))
            img[m] = (rng.uniform(12000, 30000) * (1 + texture))[m]
            break
    img = rng.normal(img, np.sqrt(np.abs(img)) * 3)
    return np.clip(img, 0, 65535).astype(np.uint16), labels

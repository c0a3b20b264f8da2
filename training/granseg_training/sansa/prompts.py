"""Reference prompts for 'multi' training: mask, points (1-20 random pixels), scribble, box (as upstream)."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["PROMPT_KINDS", "sample_points", "sample_scribble", "mask_box", "point_inputs"]

PROMPT_KINDS = ("mask", "points", "scribble", "box")


def sample_points(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n random foreground pixels as (x, y)."""
    rows, cols = np.nonzero(mask)
    pick = rng.integers(0, len(rows), size=n)
    return np.stack([cols[pick], rows[pick]], 1).astype(np.float32) + 0.5


def sample_scribble(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n points along a straight stroke between two foreground pixels, kept inside the mask (x, y)."""
    a, b = sample_points(mask, 2, rng)
    t = np.linspace(0, 1, max(n * 3, 8))[:, None]
    line = a[None] * (1 - t) + b[None] * t
    inside = mask[np.clip(line[:, 1].astype(int), 0, mask.shape[0] - 1), np.clip(line[:, 0].astype(int), 0, mask.shape[1] - 1)]
    line = line[inside] if inside.any() else a[None]
    idx = np.linspace(0, len(line) - 1, n).round().astype(int)
    return line[idx]


def mask_box(mask: np.ndarray) -> np.ndarray:
    """[[x0, y0], [x1, y1]] of the mask's bounding box."""
    rows, cols = np.nonzero(mask)
    return np.array([[cols.min(), rows.min()], [cols.max() + 1, rows.max() + 1]], np.float32)


def point_inputs(coords: list[np.ndarray], labels: list[np.ndarray], shapes: list[tuple[int, int]],
                 model_size: int, device) -> dict:
    """Batch of (N, 2) pixel coords (same N) -> sam2 point_inputs in model coordinates."""
    xy = np.stack([c * np.array([model_size / s[1], model_size / s[0]], np.float32) for c, s in zip(coords, shapes)])
    return {"point_coords": torch.from_numpy(xy).to(device),
            "point_labels": torch.from_numpy(np.stack(labels).astype(np.int32)).to(device)}

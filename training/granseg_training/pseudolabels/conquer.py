"""Conquer: parts of each instance by bottom-up merging of its patch features (UnSAM / UnSAMv2 step 2).

The instance's bounding box is cropped and embedded (long side 768 for the ViT, as UnSAMv2). Every patch
starts as its own cluster. For each threshold in 0.9, 0.8, 0.7, 0.6, 0.5, 4-neighbour clusters whose mean
features have cosine similarity above the threshold are merged, round after round, until no adjacent pair
is above it; the clusters of >= 4 patches at the end of each level are collected (coarser levels give
larger parts). A cluster is kept when > 90% of it lies inside the instance mask; NMS at IoU 0.8 removes
the near-duplicates that survive several levels.

Merging within a round is a greedy matching (most similar pairs first, each cluster merged at most once
per round), so a chain of pairwise-similar but overall dissimilar clusters is not collapsed in one step.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .features import FeatureExtractor
from .masks import bbox_of, containment, nms_order, upsample_mask

__all__ = ["iterative_merge", "conquer_instance", "DEFAULT_THRESHOLDS"]

DEFAULT_THRESHOLDS = (0.9, 0.8, 0.7, 0.6, 0.5)


def _adjacent_pairs(h: int, w: int) -> np.ndarray:
    ids = np.arange(h * w).reshape(h, w)
    right = np.stack([ids[:, :-1].ravel(), ids[:, 1:].ravel()], 1)
    down = np.stack([ids[:-1, :].ravel(), ids[1:, :].ravel()], 1)
    return np.concatenate([right, down], 0)


def iterative_merge(features: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                    min_patches: int = 4) -> list[np.ndarray]:
    """Clusters of an (h, w, C) patch grid at every threshold level, as unique (h, w) boolean masks
    (finest level first); clusters smaller than ``min_patches`` are not reported."""
    h, w, c = features.shape
    f = features.reshape(-1, c).astype(np.float64)
    f /= np.linalg.norm(f, axis=1, keepdims=True) + 1e-12
    patch_pairs = _adjacent_pairs(h, w)
    labels = np.arange(h * w)
    seen: set[bytes] = set()
    out: list[np.ndarray] = []
    for t in thresholds:
        while True:
            n = int(labels.max()) + 1
            sums = np.zeros((n, c))
            np.add.at(sums, labels, f)
            means = sums / (np.linalg.norm(sums, axis=1, keepdims=True) + 1e-12)
            pairs = labels[patch_pairs]
            pairs = pairs[pairs[:, 0] != pairs[:, 1]]
            if pairs.size == 0:
                break
            pairs = np.unique(np.sort(pairs, 1), axis=0)
            sims = (means[pairs[:, 0]] * means[pairs[:, 1]]).sum(1)
            cand = np.flatnonzero(sims > t)
            if cand.size == 0:
                break
            parent = np.arange(n)
            used = np.zeros(n, dtype=bool)
            for k in cand[np.argsort(-sims[cand], kind="stable")]:
                a, b = pairs[k]
                if not used[a] and not used[b]:
                    parent[b] = a
                    used[a] = used[b] = True
            _, labels = np.unique(parent[labels], return_inverse=True)
            labels = labels.reshape(-1)
        counts = np.bincount(labels)
        for lab in np.flatnonzero(counts >= min_patches):
            m = labels == lab
            key = np.packbits(m).tobytes()
            if key not in seen:
                seen.add(key)
                out.append(m.reshape(h, w))
    return out


def conquer_instance(image: np.ndarray, instance: np.ndarray, extractor: FeatureExtractor,
                     long_side: int | None = 768, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                     min_patches: int = 4, inside: float = 0.9, nms_iou: float = 0.8) -> list[np.ndarray]:
    """Part masks (full image size, boolean) of one instance, largest first, after the inside rule and NMS."""
    y0, x0, y1, x1 = bbox_of(instance)
    if y1 - y0 < 2 or x1 - x0 < 2:
        return []
    crop = image[y0:y1, x0:x1]
    inst_crop = instance[y0:y1, x0:x1]
    feats = extractor(crop, long_side=long_side)
    kept: list[np.ndarray] = []
    for grid in iterative_merge(feats, thresholds=thresholds, min_patches=min_patches):
        m = upsample_mask(grid, crop.shape[:2])
        if m.any() and containment(m, inst_crop) > inside:
            kept.append(m)
    kept.sort(key=lambda m: -int(np.count_nonzero(m)))
    kept = [kept[i] for i in nms_order(kept, nms_iou)]
    full = []
    for m in kept:
        big = np.zeros(instance.shape, dtype=bool)
        big[y0:y1, x0:x1] = m
        full.append(big)
    return full

"""Divide: whole-object proposals, then which of them are instances and which are parts.

UnSAMv2 uses a CutLER detector trained on MaskCut pseudo-masks. Training a detector is out of scope here, so
the default divide is MaskCut itself (Wang et al., CutLER, 2023): normalised cuts on the patch affinity graph
of a self-supervised ViT, one object per cut, repeated on the patches that are left. A user can plug in any
proposal model (a callable) or a folder of precomputed proposals (e.g. CutLER outputs) instead.

MaskCut rules kept: binary affinity ``cos > tau`` (tau 0.2) with ``eps`` for the other edges; the second
smallest generalised eigenvector of ``(D - W) x = lambda D x``; split at its mean; the foreground is the side
holding the eigenvector's largest-magnitude entry, unless >= 3 image corners fall in it (then the other side);
only the connected component holding that seed is kept. Deviation: instead of down-weighting the previous
objects' patches inside the graph, they are removed from it, which has the same purpose (no re-discovery).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import scipy.linalg
import scipy.ndimage as ndi

from .features import FeatureExtractor
from .masks import containment, upsample_mask

__all__ = [
    "normalized_cut", "maskcut", "divide_image", "classify_proposals", "proposals_from_labels",
    "FolderProposals", "ProposalFn",
]

log = logging.getLogger(__name__)

ProposalFn = Callable[[np.ndarray], Sequence[np.ndarray]]
"""A user proposal model: (H, W, 3) float image -> sequence of (H, W) boolean masks."""

_FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


def normalized_cut(features: np.ndarray, tau: float = 0.2, eps: float = 1e-5) -> tuple[np.ndarray, float]:
    """Second smallest generalised eigenvector of the binary cosine-affinity graph, and the Ncut value of
    the mean split (near 0: two clearly separate groups; near 1: nothing to cut, e.g. a uniform region)."""
    f = np.asarray(features, dtype=np.float64)
    f = f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-12)
    w = np.where(f @ f.T > tau, 1.0, eps)
    d = w.sum(1)
    _, vecs = scipy.linalg.eigh(np.diag(d) - w, np.diag(d), subset_by_index=[1, 1])
    vec = vecs[:, 0]
    side = vec > vec.mean()
    cut = w[side][:, ~side].sum()
    vol_a, vol_b = d[side].sum(), d[~side].sum()
    ncut = float(cut / vol_a + cut / vol_b) if vol_a > 0 and vol_b > 0 else 2.0
    return vec, ncut


def _corners_in(mask: np.ndarray) -> int:
    return int(mask[0, 0]) + int(mask[0, -1]) + int(mask[-1, 0]) + int(mask[-1, -1])


def maskcut(features: np.ndarray, max_instances: int = 3, tau: float = 0.2, eps: float = 1e-5,
            max_ncut: float | None = None, min_patches: int = 1) -> list[np.ndarray]:
    """MaskCut on an (h, w, C) patch grid: up to ``max_instances`` (h, w) boolean object masks.

    ``max_ncut`` (off by default, as in MaskCut) stops early when the best split of what is left is no
    real split (Ncut above it), which avoids arbitrary halves of a uniform background.
    """
    h, w, c = features.shape
    flat = features.reshape(-1, c)
    remaining = np.ones(h * w, dtype=bool)
    out: list[np.ndarray] = []
    for _ in range(max_instances):
        idx = np.flatnonzero(remaining)
        if idx.size < 2:
            break
        vec, ncut = normalized_cut(flat[idx], tau=tau, eps=eps)
        if max_ncut is not None and ncut > max_ncut:
            log.debug("maskcut: stop, Ncut %.3f > %.3f", ncut, max_ncut)
            break
        full = np.zeros(h * w)
        full[idx] = vec
        part = np.zeros(h * w, dtype=bool)
        part[idx] = vec > vec.mean()
        seed = idx[int(np.argmax(np.abs(vec)))]
        part2d = part.reshape(h, w)
        if _corners_in(part2d) >= 3 or not part[seed]:
            part = remaining & ~part
            full = -full
            seed = idx[int(np.argmax(full[idx]))]
            part2d = part.reshape(h, w)
        labels, _ = ndi.label(part2d, structure=_FOUR)
        lab = labels.reshape(-1)[seed]
        if lab == 0:
            break
        obj = labels == lab
        if obj.sum() < min_patches:
            break
        out.append(obj)
        remaining &= ~obj.reshape(-1)
    return out


def divide_image(image: np.ndarray, extractor: FeatureExtractor, max_instances: int = 3,
                 long_side: int | None = 480, tau: float = 0.2, max_ncut: float | None = None) -> list[np.ndarray]:
    """MaskCut proposals for one (H, W, 3) image, as full-resolution boolean masks."""
    feats = extractor(image, long_side=long_side)
    grids = maskcut(feats, max_instances=max_instances, tau=tau, max_ncut=max_ncut)
    masks = [upsample_mask(g, image.shape[:2]) for g in grids]
    return [m for m in masks if m.any()]


def classify_proposals(masks: Sequence[np.ndarray], min_instance_frac: float = 0.05,
                       inside: float = 0.8) -> tuple[list[int], dict[int, list[int]]]:
    """Split proposals into instances and their parts (UnSAMv2 rules).

    Instance: area > ``min_instance_frac`` of the image and not > ``inside`` contained in another (larger)
    instance. Part: any other proposal > ``inside`` contained in an instance (the one containing most of it).
    Proposals that are neither are dropped. Returns (instance indices, {instance index: part indices}).
    """
    if len(masks) == 0:
        return [], {}
    total = masks[0].size
    areas = np.array([np.count_nonzero(m) for m in masks])
    order = np.argsort(-areas, kind="stable")
    instances: list[int] = []
    for i in order:
        if areas[i] <= min_instance_frac * total:
            continue
        if any(containment(masks[i], masks[j]) > inside for j in instances):
            continue
        instances.append(int(i))
    parts: dict[int, list[int]] = {i: [] for i in instances}
    for i in order:
        if i in parts or areas[i] == 0:
            continue
        best, best_frac = None, inside
        for j in instances:
            frac = containment(masks[i], masks[j])
            if frac > best_frac:
                best, best_frac = j, frac
        if best is not None:
            parts[best].append(int(i))
    return instances, parts


def proposals_from_labels(labels: np.ndarray) -> list[np.ndarray]:
    """Proposals from a label image (one mask per label > 0) or an (N, H, W) stack of masks."""
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[-1] not in (3, 4):
        return [np.asarray(m, dtype=bool) for m in labels if np.any(m)]
    if labels.ndim != 2:
        raise ValueError(f"proposal labels must be (H, W) label image or (N, H, W) masks, got {labels.shape}.")
    return [labels == v for v in np.unique(labels) if v != 0]


class FolderProposals:
    """Precomputed proposals in a folder: ``STEM.npy`` ((N, H, W) masks or an (H, W) label image) or a label
    image ``STEM.{png,tif,tiff}``, matched to each input image by file stem."""

    SUFFIXES = (".npy", ".png", ".tif", ".tiff")

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"proposals folder {self.folder} does not exist.")

    def path_for(self, stem: str) -> Path:
        for suffix in self.SUFFIXES:
            p = self.folder / f"{stem}{suffix}"
            if p.is_file():
                return p
        raise FileNotFoundError(f"no proposals for image {stem!r} in {self.folder} (expected {stem}.npy, "
                                f"{stem}.png or {stem}.tif).")

    def load(self, stem: str, shape: tuple[int, int]) -> list[np.ndarray]:
        p = self.path_for(stem)
        if p.suffix == ".npy":
            data = np.load(p, allow_pickle=False)
        else:
            import tifffile
            from skimage import io as skio
            data = tifffile.imread(p) if p.suffix in (".tif", ".tiff") else skio.imread(p)
        masks = proposals_from_labels(data)
        for m in masks:
            if m.shape != tuple(shape):
                raise ValueError(f"proposals in {p} have shape {m.shape} but the image is {tuple(shape)}.")
        return masks

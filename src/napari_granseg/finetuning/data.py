"""A person's labelled images as fine-tuning data: checks, held-back objects, flips/rotations, target masks.

Why each piece: labels come from people (a Labels layer, a folder of TIFFs), so every problem is named with
the image it is in before anything runs; 10-20% of the objects are held back (never trained on) so the
before/after score measures generalisation, not memory; the eight flips/rotations (the dihedral group D4) of an
image are exact augmentations for microscopy, where orientation carries no meaning, and each one is encoded by
the frozen image encoder once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

__all__ = ["FinetuneInputError", "check_inputs", "split_objects", "dihedral", "centre_weights", "centre_point",
           "target_labels", "foreground_weights", "MIN_OBJECTS"]

#: Fewer objects than this cannot be split into trained and held-back ones.
MIN_OBJECTS = 3


class FinetuneInputError(ValueError):
    """Images or labels that cannot be fine-tuned on; the message names the image and says what to do."""


def _as_list(data, what: str) -> list[np.ndarray]:
    if isinstance(data, np.ndarray) or hasattr(data, "__array__") and not isinstance(data, (list, tuple)):
        arr = np.asarray(data)
        if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4) and what == "images"):
            return [arr]
        if arr.ndim in (3, 4):
            return [arr[i] for i in range(arr.shape[0])]  # a stack: its slices
        raise FinetuneInputError(f"{what} has shape {arr.shape}: give 2D images (H, W) or (H, W, 3), a list of "
                                 f"them, or a (Z, H, W) stack")
    return [np.asarray(a) for a in data]


def check_inputs(images, labels) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images and instance label images as lists of arrays, or a :class:`FinetuneInputError` saying what is wrong.

    Refused: unequal counts, a label image of another (H, W) than its image, non-integer labels, a label image
    without objects, fewer than :data:`MIN_OBJECTS` objects in all.
    """
    imgs, labs = _as_list(images, "images"), _as_list(labels, "labels")
    if len(imgs) != len(labs):
        raise FinetuneInputError(f"{len(imgs)} images but {len(labs)} label images: give one instance label image "
                                 f"(0 = background, 1..n = objects) per image")
    if not imgs:
        raise FinetuneInputError("no images given: pass at least one image with its label image")
    total = 0
    for i, (img, lab) in enumerate(zip(imgs, labs)):
        if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] not in (3, 4)):
            raise FinetuneInputError(f"image {i} has shape {img.shape}: give a 2D gray (H, W) or RGB (H, W, 3) image")
        if lab.shape != img.shape[:2]:
            raise FinetuneInputError(f"labels {i} have shape {lab.shape} but image {i} is {img.shape[:2]}: each label "
                                     f"image must have its image's height and width")
        if not np.issubdtype(lab.dtype, np.integer) and lab.dtype != bool:
            raise FinetuneInputError(f"labels {i} are {lab.dtype}: give an integer instance label image "
                                     f"(0 = background, 1..n = objects)")
        n = len(np.unique(lab[lab > 0]))
        if n == 0:
            raise FinetuneInputError(f"labels {i} hold no objects (all 0): label the objects of image {i}, or leave "
                                     f"that image out")
        total += n
    if total < MIN_OBJECTS:
        raise FinetuneInputError(f"only {total} labelled object(s) in all: fine-tuning needs at least {MIN_OBJECTS} "
                                 f"(some are held back to score the result); label more objects")
    return imgs, [lab.astype(np.int32) for lab in labs]


def split_objects(labels: list[np.ndarray], held_fraction: float = 0.15,
                  seed: int = 0) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(trained, held back) lists of ``(image index, label id)``; at least one held back, at least two trained.

    The held-back objects are drawn at random (seeded), never from an image's only object when avoidable.
    """
    objects = [(i, int(k)) for i, lab in enumerate(labels) for k in np.unique(lab[lab > 0])]
    rng = np.random.default_rng(seed)
    n_held = int(np.clip(round(held_fraction * len(objects)), 1, len(objects) - 2))
    per_image = {i: sum(1 for j, _ in objects if j == i) for i in range(len(labels))}
    order = sorted(rng.permutation(len(objects)), key=lambda o: per_image[objects[o][0]] == 1)
    held = set(int(o) for o in order[:n_held])
    return ([o for n, o in enumerate(objects) if n not in held], [o for n, o in enumerate(objects) if n in held])


def dihedral(array: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th (0..7) of the eight flips/rotations of the first two axes (k >= 4: mirrored first)."""
    out = array[:, ::-1] if k >= 4 else array
    return np.ascontiguousarray(np.rot90(out, k % 4, axes=(0, 1)))


def centre_weights(mask: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """(M, H, W) sampling weights inside each mask that grow towards its centre (distance to the border **
    ``power``), so simulated first clicks fall where people click: well inside the object, rarely on its rim."""
    out = torch.zeros(mask.shape, dtype=torch.float32)
    for i, m in enumerate(mask.cpu().numpy()):
        out[i] = torch.from_numpy(ndimage.distance_transform_edt(m).astype(np.float32)) ** power
    return out.to(mask.device)


def centre_point(mask: np.ndarray) -> tuple[float, float]:
    """(row, col) of the pixel deepest inside ``mask``: where a person clicks to pick the object."""
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(r), float(c)


@dataclass
class TargetLabels:
    """A label image at the resolution the loss is computed at (``scale`` = its size / the image's size)."""

    labels: torch.Tensor  # (h, w) int32
    scale: float


def target_labels(labels: np.ndarray, max_side: int) -> TargetLabels:
    """``labels`` resized (nearest) so the longer side is at most ``max_side``: the loss's resolution."""
    h, w = labels.shape
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        t = torch.from_numpy(labels)[None, None].float()
        small = torch.nn.functional.interpolate(t, size=size, mode="nearest")[0, 0].to(torch.int32)
    else:
        small = torch.from_numpy(labels.astype(np.int32))
    return TargetLabels(small, scale)


def foreground_weights(image: np.ndarray, size: tuple[int, int], floor: float = 0.05) -> np.ndarray:
    """(h, w) float32 click weights at ``size``: how far each (smoothed) pixel's grey value lies from the image's
    median, scaled to [floor, 1]. Objects stand out from the background in bright-on-dark (fluorescence) and
    dark-on-bright (phase contrast, histology) images alike; the floor keeps every pixel possible."""
    gray = np.asarray(image, dtype=np.float32)
    if gray.ndim == 3:
        gray = gray.mean(-1)
    gray = ndimage.gaussian_filter(gray, 1.0)
    dev = np.abs(gray - np.median(gray))
    top = float(np.percentile(dev, 99.5)) or 1.0
    weights = np.clip(dev / top, 0.0, 1.0)
    if weights.shape != tuple(size):
        t = torch.from_numpy(weights.astype(np.float32))[None, None]
        weights = torch.nn.functional.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[0, 0].numpy()
    return np.maximum(weights, floor).astype(np.float32)

"""Turning what microscopes write (16-bit, one channel, any range) into what SAM 2 expects: the ONE place.

Every engine (interactive preview, propagation, segment everything, few-shot, batch) turns pixels into model
input here, so the GUI, the console and the CLI give the same result on the same data.

Policy (one, documented in docs/scripting.md):

- **single images**: the intensity range comes from the image itself (:func:`intensity_range`);
- **stacks and series** (z-stacks, time series, a few-shot series): ONE range for the whole stack
  (:func:`intensity_range` over the stack), so a slice looks the same whether it is segmented alone in the
  preview, propagated, or run by the CLI; pass it on as ``intensity=(lo, hi)``;
- uint8 keeps its natural range (0, 255) in both cases.

Why percentiles: a 16-bit image often uses a few hundred grey levels out of 65535, with a handful of hot
pixels; min-max scaling would then squash the cells into near-black. We clip to the 0.5th..99.5th
percentile (as micro-sam and Fiji's auto-contrast do) and rescale to [0, 1]. 8-bit images are used as they
are (divided by 255), because SAM 2 was trained on natural 8-bit photographs and any stretch changes them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["to_model_rgb", "to_model_rgb_range", "check_image", "ImageShapeError", "intensity_range",
           "model_input", "downsample_for_model", "stack_intensity_range", "check_intensity", "IMAGENET_MEAN", "IMAGENET_STD", "DEFAULT_PERCENTILES"]

DEFAULT_PERCENTILES = (0.5, 99.5)
#: SAM 2's (and SANSA's) input normalisation, defined once for every engine and the trainers.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageShapeError(ValueError):
    """Raised for images the engines cannot take, with what to do instead."""


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate a single 2D image (HxW, HxWx3 or HxWx4) and return it as a numpy array."""
    image = np.asarray(image)
    if image.ndim == 2:
        pass
    elif image.ndim == 3 and image.shape[-1] in (3, 4):
        pass
    elif image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    else:
        raise ImageShapeError(
            f"expected one 2D image shaped (H, W) or (H, W, 3), got shape {image.shape}. For a z-stack or "
            f"time series pass one slice (stack[i]) or use the stack functions (propagate / segment_stack); "
            f"for channels-first data use np.moveaxis(image, 0, -1)."
        )
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ImageShapeError(f"image of shape {image.shape} is too small to segment (need at least 8x8 pixels).")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise ImageShapeError(f"image dtype {image.dtype} is not numeric.")
    return image


def to_model_rgb(image: np.ndarray, percentiles: tuple[float, float] | None = DEFAULT_PERCENTILES) -> np.ndarray:
    """Return ``float32`` (H, W, 3) in [0, 1].

    - uint8: divided by 255, unchanged otherwise.
    - uint16 / other ints / floats: clipped to ``percentiles`` (None: min-max) and rescaled.
    - gray: repeated to 3 channels; RGBA: alpha dropped.
    """
    image = check_image(image)
    if image.dtype == np.uint8:
        return to_model_rgb_range(image, 0.0, 255.0)
    lo, hi = intensity_range(image, percentiles)
    return to_model_rgb_range(image, lo, hi)


def intensity_range(data: np.ndarray, percentiles: tuple[float, float] | None = DEFAULT_PERCENTILES,
                    max_samples: int = 1 << 18) -> tuple[float, float]:
    """(lo, hi) of a whole image or stack, from a strided subsample when large (one range for all slices).

    uint8 data keeps its natural range (0, 255): SAM 2 was trained on 8-bit photographs as they are.
    A 262k-pixel subsample gives the percentiles to well under one grey level while costing ~2 ms.
    """
    arr = np.asarray(data)
    if arr.dtype == np.uint8:
        return 0.0, 255.0
    if percentiles is None:  # min-max must see every pixel
        finite = arr[np.isfinite(arr)] if np.issubdtype(arr.dtype, np.floating) else arr
        return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    step = max(1, int(np.ceil(arr.size / max_samples)))
    sample = arr.reshape(-1)[::step].astype(np.float32)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(sample, percentiles)
    return float(lo), float(hi)


#: Slices read to find a stack's intensity range: enough for stable percentiles, few enough for a stack larger
#: than memory (a zarr/dask stack is never read whole for this).
STACK_SAMPLE_SLICES = 16


def stack_intensity_range(stack, percentiles: tuple[float, float] | None = DEFAULT_PERCENTILES,
                          max_slices: int = STACK_SAMPLE_SLICES) -> tuple[float, float] | None:
    """The ONE (lo, hi) range every slice of a stack is scaled with; None for uint8 stacks (natural range).

    ``stack``: any (Z, H, W[, C]) array-like indexable by slice (numpy, dask, zarr, a napari layer's data).
    At most ``max_slices`` evenly spaced slices are read, so the GUI, the API and the CLI compute the same
    range from the same slices, and a 1000-slice zarr stack costs 16 slice reads.
    """
    if np.dtype(stack.dtype) == np.uint8:
        return None
    n = int(stack.shape[0])
    picks = np.unique(np.linspace(0, n - 1, num=min(n, max_slices)).round().astype(int))
    sample = np.stack([np.asarray(stack[int(i)]) for i in picks])
    lo, hi = intensity_range(sample, percentiles)
    return float(lo), float(hi)


def check_intensity(value, name: str = "intensity", strict: bool = False) -> tuple[float, float] | None:
    """``value`` as a finite (low, high) pair (None stays None), or a ValueError naming ``name`` and saying what
    to pass. ``strict``: low must be below high (an equal pair is accepted otherwise: a flat stack's range)."""
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: give the (low, high) grey values to scale to [0, 1], e.g. the "
                         f"stack's range from engine.normalize.stack_intensity_range(stack), or None") from None
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name}={value!r} is not finite: give two finite grey values (low, high)")
    if hi < lo or (strict and hi == lo):
        raise ValueError(f"{name}={value!r}: low must be below high")
    return lo, hi


def to_model_rgb_range(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Like :func:`to_model_rgb` with a fixed intensity range (stack-wide), for non-uint8 data."""
    image = check_image(image)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.dtype == np.uint8 and (lo, hi) == (0.0, 255.0):
        out = image.astype(np.float32) / 255.0
    else:
        hi = hi if hi > lo else lo + 1.0
        out = np.clip((np.nan_to_num(image.astype(np.float32)) - lo) / (hi - lo), 0.0, 1.0)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=-1)
    return np.ascontiguousarray(out, dtype=np.float32)


def downsample_for_model(image: np.ndarray, model_size: int, factor: int = 2) -> np.ndarray:
    """Stride-decimate images far larger than the model input (``factor`` x its size) before normalising.

    The encoder sees ``model_size`` pixels anyway; decimating first keeps a 20k x 20k slide from needing
    gigabytes of float copies. Masks still come back at full resolution (logits are upsampled).
    """
    h, w = image.shape[:2]
    step = int(max(h, w) // (model_size * factor))
    if step <= 1:
        return image
    return image[::step, ::step]


def model_input(image: np.ndarray, size: int, device: "torch.device | str" = "cpu",
                intensity: tuple[float, float] | None = None,
                percentiles: tuple[float, float] | None = DEFAULT_PERCENTILES) -> "torch.Tensor":
    """(1, 3, size, size) float32 model input on ``device``: intensity scaling, gray -> RGB, square bilinear
    antialiased resize, ImageNet normalisation (SAM 2's own transforms, in that order).

    ``intensity``: the (lo, hi) range to scale non-uint8 data with; give the stack's range for a slice of a
    stack (the policy above). None: the image's own range from ``percentiles``.
    The float work runs on ``device`` (3x faster set_image on CUDA than on the CPU); very large images are
    stride-decimated first (:func:`downsample_for_model`), which keeps a 20k px slide out of float copies.
    """
    import torch
    import torch.nn.functional as F

    image = check_image(image)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    small = downsample_for_model(image, size)
    if image.dtype == np.uint8 and intensity is None:
        lo, hi = 0.0, 255.0
    else:
        lo, hi = intensity if intensity is not None else intensity_range(image, percentiles)
    hi = hi if hi > lo else lo + 1.0
    data = small.astype(np.float32, copy=False)
    if np.issubdtype(small.dtype, np.floating):
        data = np.nan_to_num(data)
    x = torch.from_numpy(np.ascontiguousarray(data)).to(device)
    x = x[None].expand(3, -1, -1) if x.ndim == 2 else x.permute(2, 0, 1)
    x = ((x - lo) / (hi - lo)).clamp_(0.0, 1.0)
    x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std

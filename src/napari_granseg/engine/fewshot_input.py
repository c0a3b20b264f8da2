"""Pixels and prompts -> SANSA's model input, and the model's logits -> a mask at the image's size.

uint8 images follow the official SANSA pipeline step by step, because its published numbers were measured
on exactly these steps (resizing in float instead moves the target logits by ~3e-3 on identical weights):

1. ``PIL.Image.fromarray(image).convert("RGB")`` (gray is repeated to RGB, alpha dropped);
2. square resize to ``image_size`` (640 for natural images, 518 for FSS-1000 / medical data) with
   torchvision on the PIL image: bilinear, antialiased, the result stays uint8;
3. ``to_tensor`` (/255) and ImageNet ``normalize``;
4. inside the model: bilinear antialiased resize to the model size (1024 px), no re-normalising.

Masks go nearest to ``image_size`` first, then bilinear antialiased to the model size, ``> 0``. Points and
boxes in image pixels are scaled to the ``image_size`` frame, then by ``model_size / image_size``. Logits go
bilinearly to ``image_size``, then to the image's own size; the mask is ``sigmoid > 0.5``.

16-bit and float images have no counterpart upstream (it reads 8-bit photographs only). They take the
plugin's float path (:func:`napari_granseg.engine.normalize.model_input`): intensities scaled to [0, 1] with
one range (``intensity=(lo, hi)``: give the series' range so that every image is scaled alike; default: the
image's own percentiles), resized in float to ``image_size``, then to the model size.
``image_size=None`` skips the square pre-resize on both paths (straight to the model size).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .normalize import IMAGENET_MEAN, IMAGENET_STD, check_image, model_input

__all__ = ["preprocess_image", "preprocess_mask", "to_model_size", "reference_prompt", "upsample_logits",
           "FewShotError"]


class FewShotError(ValueError):
    """A few-shot request the engine cannot run (no reference, empty mask, bad prompt), with what to do."""


def to_model_size(x: torch.Tensor, model_size: int) -> torch.Tensor:
    """The model's own resize of its input (bilinear, antialiased), as SANSA does inside its forward pass."""
    return F.interpolate(x, size=(model_size, model_size), mode="bilinear", align_corners=False, antialias=True)


def _uint8_tensor(image: np.ndarray, image_size: int | None) -> torch.Tensor:
    """(1, 3, S, S) normalised tensor of a uint8 image through PIL + torchvision, as upstream."""
    import torchvision.transforms.functional as TF
    from PIL import Image

    pil = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    if image_size:
        pil = TF.resize(pil, [image_size, image_size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return TF.normalize(TF.to_tensor(pil), list(IMAGENET_MEAN), list(IMAGENET_STD))[None]


def preprocess_image(image: np.ndarray, model_size: int, image_size: int | None,
                     device: torch.device | str = "cpu",
                     intensity: tuple[float, float] | None = None) -> torch.Tensor:
    """One image (H, W[, 3|4]) -> (1, 3, model_size, model_size) float32 model input on ``device``.

    uint8: the upstream PIL path (module docstring). Other dtypes: the float path with ``intensity`` as the
    (lo, hi) range (None: the image's own percentiles).
    """
    image = check_image(image)
    if image.dtype == np.uint8:
        x = _uint8_tensor(image, image_size).to(device)
    else:
        x = model_input(image, image_size or model_size, device, intensity=intensity)
    return to_model_size(x, model_size)


def preprocess_mask(mask: np.ndarray, model_size: int, device: torch.device | str = "cpu",
                    image_size: int | None = None) -> torch.Tensor:
    """(H, W) -> (1, 1, model_size, model_size) bool: nearest to ``image_size`` (skipped when None), then
    bilinear antialiased to the model size, ``> 0`` (upstream)."""
    t = torch.from_numpy(np.ascontiguousarray(np.asarray(mask) > 0, np.float32))[None, None].to(device)
    if image_size:
        t = F.interpolate(t, size=(image_size, image_size), mode="nearest")
    return to_model_size(t, model_size) > 0


def _xy(points, name: str) -> np.ndarray:
    arr = np.asarray(points, np.float32)
    if arr.ndim == 1 and arr.size == 2:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise FewShotError(f"{name} must be a list of [x, y] pixel coordinates, got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise FewShotError(f"{name} contains NaN or infinite coordinates: pass finite [x, y] pixel positions.")
    return arr


def reference_prompt(shape: tuple[int, int], model_size: int, image_size: int | None,
                     device: torch.device | str = "cpu", mask=None, points=None, box=None,
                     scribble=None) -> dict:
    """A reference's prompt as sam2's ``track_step`` takes it: ``{"mask_inputs", "point_inputs"}``.

    ``mask`` (H, W) of the reference image, or ``points`` [[x, y], ...] (label 1), ``box`` [x0, y0, x1, y1]
    (labels 2, 3), ``scribble`` [[x, y], ...] (label 1, as upstream's scribbles: many positive points), all
    in the image's pixels.
    """
    if mask is not None and (points is not None or box is not None or scribble is not None):
        raise FewShotError("give a reference either a mask or points/box/scribble, not both.")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != tuple(shape):
            raise FewShotError(f"reference mask shape {mask.shape} differs from its image's {tuple(shape)}; "
                              f"pass the mask of this very image (same height and width).")
        if not (mask > 0).any():
            raise FewShotError("reference mask is empty: label at least one object of the class in each "
                              "reference (or drop this reference).")
        return {"mask_inputs": preprocess_mask(mask, model_size, device, image_size), "point_inputs": None}
    coords, labels = [], []
    for name, value in (("points", points), ("scribble", scribble)):
        if value is not None:
            p = _xy(value, name)
            coords.append(p)
            labels.append(np.ones(len(p), np.int32))
    if box is not None:
        b = np.asarray(box, np.float32).reshape(-1)
        if b.size != 4 or not np.isfinite(b).all() or b[2] < b[0] or b[3] < b[1]:
            raise FewShotError(f"box must be [x0, y0, x1, y1] with x0 <= x1 and y0 <= y1, got {box!r}.")
        coords.append(b.reshape(2, 2))
        labels.append(np.array([2, 3], np.int32))
    if not coords:
        raise FewShotError("add_reference needs a prompt: mask=, points=, box= or scribble=.")
    xy = np.concatenate(coords).astype(np.float32)
    h, w = shape
    if (xy[:, 0] < 0).any() or (xy[:, 1] < 0).any() or (xy[:, 0] > w).any() or (xy[:, 1] > h).any():
        raise FewShotError(f"prompt coordinates must be (x, y) pixels inside the {w}x{h} image; got {xy.tolist()[:4]}.")
    if image_size:  # to upstream's S x S frame, then S -> model size
        xy = xy * np.array([image_size / w, image_size / h], np.float32)
        xy = xy * np.float32(model_size / image_size)
    else:
        xy = xy * np.array([model_size / w, model_size / h], np.float32)
    return {"mask_inputs": None,
            "point_inputs": {"point_coords": torch.from_numpy(xy)[None].to(device),
                             "point_labels": torch.from_numpy(np.concatenate(labels))[None].to(device)}}


def upsample_logits(low_res: torch.Tensor, shape: tuple[int, int], image_size: int | None) -> torch.Tensor:
    """(1, 1, h, w) low-res logits -> (H, W) float32 logits at the image's size: bilinearly to
    ``image_size`` first when set (upstream), then to ``shape``."""
    up = low_res.float()
    if image_size:
        up = F.interpolate(up, size=(image_size, image_size), mode="bilinear", align_corners=False)
    if tuple(up.shape[-2:]) != tuple(shape):
        up = F.interpolate(up, size=tuple(shape), mode="bilinear", align_corners=False)
    return up[0, 0]

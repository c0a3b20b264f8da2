"""Patch features for the divide and conquer stages: ``(H, W, 3) float image -> (h, w, C) patch grid``.

Two backends, chosen by name with :func:`make_extractor`:

- ``"timm:NAME"`` -- a self-supervised ViT from timm (DINO / DINOv2 / DINOv3), the one UnSAMv2 uses.
  Pretrained weights need the internet (Hugging Face hub) or a local file (``pretrained_weights``).
- ``"color"`` -- a tiny deterministic backend (colour kernel features + position per patch) so tests and
  demos run with no weights; similar colours get cosine similarity near 1, different colours near 0.

Both resize the image so its long side is ``long_side`` and both sides are multiples of the patch size, so
the patch grid covers the whole image (upsampling a grid mask back to (H, W) is then a plain resize).
"""
from __future__ import annotations

import logging
import os
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from napari_granseg.checkpoints import read_state_dict
from napari_granseg.engine.normalize import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "FeatureExtractor", "ColorFeatures", "TimmFeatures", "make_extractor", "grid_shape", "DEFAULT_TIMM_MODEL",
]

log = logging.getLogger(__name__)

# UnSAMv2 uses DINOv3 ViT-B/16 for the conquer stage.
DEFAULT_TIMM_MODEL = "vit_base_patch16_dinov3.lvd1689m"


@runtime_checkable
class FeatureExtractor(Protocol):
    """Anything that maps an image to a grid of patch features."""

    patch_size: int

    def __call__(self, image: np.ndarray, long_side: int | None = None) -> np.ndarray:
        """(H, W, 3) float image in [0, 1] -> (h, w, C) float32 features (h*p, w*p ~ resized H, W)."""
        ...


def grid_shape(height: int, width: int, patch: int, long_side: int | None) -> tuple[int, int]:
    """Patch grid (h, w) for an image resized to ``long_side`` (None: native size), at least 1x1."""
    scale = 1.0 if long_side is None else float(long_side) / max(height, width)
    return max(1, int(round(height * scale / patch))), max(1, int(round(width * scale / patch)))


def _resize_image(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H, W, 3) numpy -> (1, 3, h, w) float tensor, bilinear (antialiased when shrinking)."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def _check_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"feature extractors take an (H, W, 3) RGB image in [0, 1], got shape {image.shape}; "
                         f"convert with napari_granseg.engine.normalize.to_model_rgb first.")
    return image


class ColorFeatures:
    """Deterministic patch features from colour and position (no weights; for tests and quick demos).

    Per patch: the mean colour embedded with Gaussian kernels on a 4x4x4 grid of anchor colours (so cosine
    similarity behaves like a colour-similarity kernel, ~exp(-d^2 / (4 sigma^2)): with the defaults, red vs
    dark red (0.5, 0.05, 0.05) ~0.54, red vs orange (0.9, 0.4, 0.1) ~0.71, red vs blue or green ~0.01), plus
    the patch centre (y, x) in [-0.5, 0.5] scaled by ``position_weight``.
    """

    def __init__(self, patch_size: int = 8, sigma: float = 0.25, position_weight: float = 0.1,
                 anchors_per_axis: int = 4):
        self.patch_size = int(patch_size)
        self.sigma = float(sigma)
        self.position_weight = float(position_weight)
        g = np.linspace(0.0, 1.0, int(anchors_per_axis))
        self._anchors = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3).astype(np.float32)

    def __call__(self, image: np.ndarray, long_side: int | None = None) -> np.ndarray:
        image = _check_rgb(image)
        h, w = grid_shape(image.shape[0], image.shape[1], self.patch_size, long_side)
        # mean colour per patch == area-average resize to the grid
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
        mean = F.adaptive_avg_pool2d(x, (h, w))[0].permute(1, 2, 0).numpy()  # (h, w, 3)
        d2 = ((mean[:, :, None, :] - self._anchors[None, None]) ** 2).sum(-1)
        color = np.exp(-d2 / (2 * self.sigma ** 2))
        color /= np.linalg.norm(color, axis=-1, keepdims=True) + 1e-8
        yy, xx = np.meshgrid((np.arange(h) + 0.5) / h - 0.5, (np.arange(w) + 0.5) / w - 0.5, indexing="ij")
        pos = self.position_weight * np.stack([yy, xx], -1)
        return np.concatenate([color, pos], -1).astype(np.float32)


class TimmFeatures:
    """Patch tokens of a timm ViT (prefix tokens -- class and registers -- dropped).

    ``pretrained=True`` downloads from the Hugging Face hub; ``pretrained_weights`` loads a local state dict
    instead (``.safetensors`` or a torch file of tensors, bare or under ``"model"``, read by
    :func:`napari_granseg.checkpoints.read_state_dict`); ``pretrained=False`` gives
    random weights (tests only: random features make meaningless pseudo-labels).
    """

    def __init__(self, name: str = DEFAULT_TIMM_MODEL, pretrained: bool = True,
                 pretrained_weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 default_long_side: int = 768):
        try:
            import timm
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("the timm backbone needs timm: pip install 'napari-granseg[training]' "
                              "(or pip install timm).") from exc
        self.name = name
        kwargs = dict(num_classes=0, dynamic_img_size=True)
        if pretrained_weights is not None:
            state = read_state_dict(pretrained_weights, "pretrained weights file")
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(state_dict=state),
                                      **kwargs)
        elif pretrained:
            try:
                model = timm.create_model(name, pretrained=True, **kwargs)
            except Exception as exc:  # network / hub / gated-repo failures all look different
                raise RuntimeError(
                    f"could not get pretrained weights for timm model {name!r} ({type(exc).__name__}: {exc}). "
                    f"Download them once on a machine with internet: python -c \"import timm; "
                    f"timm.create_model('{name}', pretrained=True)\" (they are cached under "
                    f"~/.cache/huggingface; set HF_HOME to move it), or save the state dict to a file and pass "
                    f"--pretrained-weights PATH (.safetensors or .pth)."
                ) from exc
        else:
            log.warning("timm model %s has RANDOM weights: pseudo-labels will be meaningless (tests only).", name)
            model = timm.create_model(name, pretrained=False, **kwargs)
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        ps = model.patch_embed.patch_size
        self.patch_size = int(ps[0] if isinstance(ps, (tuple, list)) else ps)
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 1))
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        self.mean = torch.tensor(cfg.get("mean", IMAGENET_MEAN), dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", IMAGENET_STD), dtype=torch.float32).view(1, 3, 1, 1)
        self.default_long_side = int(default_long_side)

    @torch.no_grad()
    def __call__(self, image: np.ndarray, long_side: int | None = None) -> np.ndarray:
        image = _check_rgb(image)
        h, w = grid_shape(image.shape[0], image.shape[1], self.patch_size, long_side or self.default_long_side)
        x = _resize_image(image, (h * self.patch_size, w * self.patch_size))
        x = ((x - self.mean) / self.std).to(self.device)
        tokens = self.model.forward_features(x)  # (1, prefix + h*w, C)
        patches = tokens[0, self.num_prefix_tokens:]
        if patches.shape[0] != h * w:
            raise RuntimeError(f"timm model {self.name} returned {patches.shape[0]} patch tokens for a {h}x{w} "
                               f"grid; it may not support dynamic image sizes.")
        return patches.reshape(h, w, -1).float().cpu().numpy()


def make_extractor(backbone: str, pretrained: bool = True, pretrained_weights: str | os.PathLike | None = None,
                   device: str | torch.device = "cpu") -> FeatureExtractor:
    """Build an extractor from a name: ``"color"``, ``"timm"`` (default DINOv3 ViT-B/16) or ``"timm:NAME"``."""
    if backbone == "color":
        return ColorFeatures()
    if backbone == "timm" or backbone.startswith("timm:"):
        name = backbone.partition(":")[2] or DEFAULT_TIMM_MODEL
        return TimmFeatures(name, pretrained=pretrained, pretrained_weights=pretrained_weights, device=device)
    raise ValueError(f"unknown backbone {backbone!r}: use 'color' or 'timm:MODEL_NAME' (e.g. "
                     f"'timm:{DEFAULT_TIMM_MODEL}', 'timm:vit_base_patch14_dinov2.lvd142m', "
                     f"'timm:vit_base_patch16_224.dino').")

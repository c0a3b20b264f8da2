"""Joint image+mask augmentation (UnSAMv2's recipe: hflip, RandomAffine 25 deg / shear 20, colour jitter,
grayscale p .05).

Geometric transforms go through ``torchvision.transforms.v2`` with the masks wrapped as ``tv_tensors.Mask`` so
image and masks move together. Masks that leave the frame are dropped later (``_subsample`` keeps non-empty
ones). Seeded per sample from the dataset's generator, so runs are reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["AugmentConfig", "JointAugment"]


@dataclass
class AugmentConfig:
    """Probabilities/strengths; set ``enabled=False`` (default for the fast test model) to skip all of it."""

    enabled: bool = False
    hflip: float = 0.5
    affine_p: float = 0.5
    degrees: float = 25.0
    shear: float = 20.0
    color_jitter_p: float = 0.5
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.05
    grayscale: float = 0.05


class JointAugment:
    """Callable ``(sample, rng) -> sample`` used by the datasets."""

    def __init__(self, cfg: AugmentConfig):
        from torchvision.transforms import v2

        self.cfg = cfg
        self.v2 = v2
        self.affine = v2.RandomAffine(degrees=cfg.degrees, shear=cfg.shear)
        self.jitter = v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
        self.gray = v2.Grayscale(num_output_channels=3)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        from torchvision import tv_tensors

        cfg = self.cfg
        image, masks = sample["image"], sample["masks"]
        if rng.random() < cfg.hflip:
            image, masks = image.flip(-1), masks.flip(-1)
        if rng.random() < cfg.affine_p:
            # torchvision draws its parameters from torch's global generator: fork it, seeded from rng
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(2**31)))
                img_t, m_t = self.affine(tv_tensors.Image(image), tv_tensors.Mask(masks.to(torch.uint8)))
            image, masks = img_t.as_subclass(torch.Tensor), m_t.as_subclass(torch.Tensor).bool()
        if rng.random() < cfg.color_jitter_p:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(2**31)))
                image = self.jitter(image)
        if rng.random() < cfg.grayscale:
            image = self.gray(image)
        return {**sample, "image": image.clamp(0, 1).contiguous(), "masks": masks.contiguous()}

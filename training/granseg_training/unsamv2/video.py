"""Short synthetic videos from one training image: the image drifts a few pixels per frame.

Why: upstream UnSAMv2 trains on single images only, which is fine when SAM 2's pretrained memory is already
there; a model trained from scratch (the tiny demo) has never used its memory and cannot propagate through a
stack. Drifting the image (and its masks with it) gives frames in which the same objects must be found again
at a new place, with fresh noise, which is what following an object through z or t asks of the memory path.
"""
from __future__ import annotations

import random

import torch

__all__ = ["drifting_video"]


def drifting_video(images: torch.Tensor, masks: list[torch.Tensor], granularity: list[torch.Tensor],
                   n_frames: int, max_drift: float, max_objects: int, rng: random.Random,
                   generator: torch.Generator | None = None, noise: float = 0.02,
                   ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """(B, 3, S, S) images in [0, 1] and (M_i, S, S) masks -> (B, T, 3, S, S) frames, (K_i, T, S, S) masks and
    their (K_i,) g, with K_i <= ``max_objects`` objects drawn per image.

    Each image moves by its own constant velocity (uniform in +-``max_drift`` px per frame along x and y;
    ``torch.roll``, so nothing leaves the frame) and every frame gets Gaussian noise of std ``noise``.
    """
    frames, video_masks, video_g = [], [], []
    for image, m, g in zip(images, masks, granularity):
        keep = sorted(rng.sample(range(len(m)), min(max_objects, len(m))))
        m, g = m[keep], g[keep]
        vy, vx = rng.uniform(-max_drift, max_drift), rng.uniform(-max_drift, max_drift)
        shifts = [(round(vy * t), round(vx * t)) for t in range(n_frames)]
        clip = torch.stack([torch.roll(image, s, dims=(-2, -1)) for s in shifts])
        if noise > 0:
            clip = clip + noise * torch.randn(clip.shape, generator=generator, device=clip.device)
        frames.append(clip.clamp(0, 1))
        video_masks.append(torch.stack([torch.roll(m, s, dims=(-2, -1)) for s in shifts], dim=1))
        video_g.append(g)
    return torch.stack(frames), video_masks, video_g

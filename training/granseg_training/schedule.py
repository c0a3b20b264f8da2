"""The learning-rate schedule of both trainers: linear warm-up, then cosine from ``lr`` to ``lr_min``.

It is a :class:`torch.optim.lr_scheduler.LambdaLR`, stepped once per optimiser step, so it saves and resumes
with the optimiser like any torch scheduler. The factor is written out (not composed from ``LinearLR`` and
``CosineAnnealingLR``) because those update the rate recursively and drift from the closed form by rounding;
here the rate of step ``k`` is always ``lr * warmup_cosine_factor(k, ...)``.
"""
from __future__ import annotations

import math

import torch

__all__ = ["warmup_cosine_factor", "warmup_cosine_schedule"]


def warmup_cosine_factor(step: int, steps: int, warmup_steps: int, lr: float, lr_min: float) -> float:
    """Multiplier of ``lr`` at optimiser step ``step`` (0-based).

    Steps ``0 .. warmup_steps-1``: ``(step + 1) / warmup_steps`` (the first step already trains). Then a half
    cosine from 1 to ``lr_min / lr`` over the remaining ``steps - warmup_steps`` steps; past ``steps`` it stays
    at ``lr_min / lr``.
    """
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    rate = lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * t))
    return rate / lr


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, steps: int, warmup_steps: int,
                           lr_min: float) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over ``optimizer`` (whose ``lr`` is the peak rate); call ``.step()`` after each
    ``optimizer.step()``. Sets the rate of step 0 at once."""
    if steps < 1 or warmup_steps < 0:
        raise ValueError(f"steps={steps}, warmup_steps={warmup_steps}: need steps >= 1 and warmup_steps >= 0")
    lr = float(optimizer.param_groups[0]["lr"])
    if lr <= 0:
        raise ValueError(f"optimizer lr={lr}: the peak learning rate must be positive")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, steps, warmup_steps, lr, lr_min))

"""Seeding of every random generator a training run draws from, in one call.

Both trainers seed Python's ``random``, NumPy's global generator and torch's default generator from the
config's ``seed`` before they build a model, so the same config gives the same initial weights and the same
data order (bit for bit on one CPU thread).
"""
from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed ``random``, ``numpy.random`` (seed modulo 2**32, NumPy's limit) and ``torch.manual_seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)

"""Recorded recipes: the tiny few-shot model the test suite trains, and the bundled demo model.

Both train ``granseg_tiny.yaml`` (256 px) from random weights (``trainable='all'``: there is no pretrained
tiny SAM 2 offline) on synthetic discs-vs-triangles episodes (1 reference + 1 query, mask prompts). Changes
from SANSA's published recipe (the defaults of :class:`SansaTrainConfig`), because that one fine-tunes adapters on
a pretrained SAM 2.0-L: lr 2e-4 -> 1e-4 (cosine) with a 20-step warm-up; no 640 px pre-resize (images go straight to 256 px); loss at the model's 256 px.

Why lr 2e-4: at 2e-3 (and 5e-4 over 1500 steps) the from-scratch model settles in "segment the discs
whatever the reference" (query IoU ~0.48, flat) and never starts to read the memory; at 2e-4 the memory
path opens after ~600 steps (development runs, 1 thread each, eval = ``evaluate.class_separation``):

| lr | step | discs: IoU referenced / other | triangles: referenced / other |
|---|---|---|---|
| 2e-3 | 900 | 0.64 / 0.34 | 0.29 / 0.68 (discs segmented) |
| 5e-4 | 600 | 0.63 / 0.33 | 0.28 / 0.68 (discs segmented) |
| 2e-4 | 600 | 0.67 / 0.27 | 0.36 / 0.25 |
| 2e-4 | 900 | 0.87 / 0.05 | 0.59 / 0.13 |
"""
from __future__ import annotations

from pathlib import Path

from .config import SansaTrainConfig

__all__ = ["fast_test_config", "demo_config"]


def _base(out_dir: str | Path, seed: int, **kw) -> SansaTrainConfig:
    data = dict(model_config="granseg_tiny.yaml", trainable="all", data="synthetic", scene_size=128,
                n_objects=[2, 3], shots=1, prompt="mask", image_size=None, loss_size=None, batch_size=4,
                lr=2e-4, lr_min=1e-4, warmup_steps=20, device="cpu", seed=seed, out_dir=str(out_dir),
                progress=False, log_every=50)
    data.update(kw)
    return SansaTrainConfig.from_dict(data)


def fast_test_config(out_dir: str | Path, seed: int = 0, steps: int = 1000, **kw) -> SansaTrainConfig:
    """The model ``tests/fewshot`` trains (its session-scoped ``trained_sansa`` fixture)."""
    return _base(out_dir, seed, steps=steps, checkpoint_name="sansa_test.pt", **kw)


def demo_config(out_dir: str | Path, seed: int = 0, steps: int = 3000, **kw) -> SansaTrainConfig:
    """The bundled demo model (``sansa_demo.pt``): the test recipe, longer, 1-2 references."""
    return _base(out_dir, seed, steps=steps, shots=2, checkpoint_name="sansa_demo.pt", **kw)

"""Recorded recipes: the tiny few-shot model the test suite trains, and the bundled demo model.

Both train ``granseg_tiny.yaml`` (256 px) from random weights (``trainable='all'``: there is no pretrained
tiny SAM 2 offline) on synthetic discs-vs-triangles episodes (1 reference + 1 query, mask prompts). Changes
from the spec's recipe, because it fine-tunes adapters on a pretrained SAM 2.0-L: lr 2e-3 -> 1e-4 with a
20-step warm-up; no 640 px pre-resize (images go straight to 256 px); loss at the model's 256 px.
"""
from __future__ import annotations

from pathlib import Path

from .config import SansaTrainConfig

__all__ = ["fast_test_config", "demo_config"]


def _base(out_dir: str | Path, seed: int, **kw) -> SansaTrainConfig:
    data = dict(model_config="granseg_tiny.yaml", trainable="all", data="synthetic", scene_size=128,
                n_objects=[2, 3], shots=1, prompt="mask", image_size=None, loss_size=None, batch_size=4,
                lr=2e-3, lr_min=1e-4, warmup_steps=20, device="cpu", seed=seed, out_dir=str(out_dir),
                progress=False, log_every=50)
    data.update(kw)
    return SansaTrainConfig.from_dict(data)


def fast_test_config(out_dir: str | Path, seed: int = 0, steps: int = 400, **kw) -> SansaTrainConfig:
    """The model ``tests/fewshot`` trains (session fixture)."""
    return _base(out_dir, seed, steps=steps, checkpoint_name="sansa_test.pt", **kw)


def demo_config(out_dir: str | Path, seed: int = 0, steps: int = 3000, **kw) -> SansaTrainConfig:
    """The bundled demo model (``sansa_demo.pt``): the test recipe, longer, 1-2 references."""
    return _base(out_dir, seed, steps=steps, shots=2, checkpoint_name="sansa_demo.pt", **kw)

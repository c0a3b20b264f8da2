"""Recorded recipes: the fast model the test suite trains and the bundled demo model.

Both train the tiny config (``granseg_tiny.yaml``, 256 px, ~1.4 M parameters) from random weights
(``trainable='all'``: no pretrained tiny base exists offline) on synthetic nested scenes with 1-3 cells, with
UnSAMv2's published recipe (the defaults of :class:`UnSAMv2TrainConfig`) except where noted:

- lr 3e-4 -> 3e-5 (cosine) with 20 warm-up steps (from scratch; the published 1e-4 -> 1e-5 is for fine-tuning a
  pretrained SAM 2.1),
- at most 1 correction click per mask (published: 3) to keep CPU steps short,
- ``inner_click_prob`` 0.75: three quarters of the first clicks for a nucleus or cell fall in the innermost mask inside it
  (the nucleolus) -- still a click inside the target, but the same location is then seen with several g,
  which is exactly the ambiguity g has to resolve (uniform clicks rarely land on the nucleolus of a cell).

Why lr 3e-4: at 2e-3 (an earlier recipe) the model learned g but not the click position -- on a
scene with several cells it returned all of them. The decoder's token-to-image attention, which ties the click
to a place, did not form at that rate; at 3e-4 it does. Measured on unseen 3-cell scenes, click on each
nucleolus (1 thread, run ``u3e4``: 2000-step schedule, 1-3 cells):

| step | IoU nucleolus @ g=0.1 | nucleus @ 0.5 | cell @ 1.0 | share of the g=1 mask on OTHER cells |
|---|---|---|---|---|
| 400 | 0.25 | 0.35 | 0.00 | 0.67 |
| 800 | 0.76 | 0.80 | 0.74 | 0.14 |
| 1200 | 0.91 | 0.93 | 0.92 | 0.05 |
| 2000 | 0.93 | 0.96 | 0.96 | 0.02 |

Memory stage: the recipe above trains on single images, as upstream, so the memory modules that
stack propagation uses stay at their random start; the model then keeps "a cell" in memory but not which one
(on two-cell stacks it segments both: IoU ~0.45 on the slices it propagates to, ~0.18 for nucleoli). The demo
gets a second stage from the first's checkpoint: 1000 steps with 70 % memory episodes (``video_prob``: 3-frame
drifting clips, SAM 2's own ``track_step``), lr 3e-4 -> 3e-5. Measured on unseen 2-cell drifting stacks
(8 slices, click on the middle one; mean IoU over the 7 propagated slices) and on single images (4 unseen 3-cell
scenes), 1 thread, while searching (2-3 cells per scene, so that only the place tells the clicked cell from
the others):

| memory stage | lr | step | propagation nucleolus / nucleus / cell | images nucleolus / nucleus / cell |
|---|---|---|---|---|
| none (demo v2) | - | 0 | 0.18 / 0.32 / 0.31 | 0.92 / 0.96 / 0.96 |
| 50 % episodes, 1-3 cells | 1e-4 | 500 | 0.49 / 0.45 / 0.49 | 0.92 / 0.97 / 0.97 |
| 70 % episodes, 2-3 cells, 4 frames | 1e-4 | 400 | 0.45 / 0.46 / 0.49 | 0.90 / 0.95 / 0.96 |
| 70 % episodes, 2-3 cells | 3e-4 | 200 | 0.50 / 0.44 / 0.49 | 0.88 / 0.94 / 0.94 |
| 70 % episodes, 2-3 cells | 3e-4 | 400 | 0.72 / 0.92 / 0.98 | 0.81 / 0.93 / 0.94 |
| 70 % episodes, 2-3 cells | 3e-4 | 600 | 0.91 / 0.95 / 0.99 | 0.92 / 0.97 / 0.97 |

As for the click position, the rate decides: at 1e-4 the memory never learned where the object was.
The full 1000 steps, 2-3 cells vs 1-3 cells (the recipe: one-cell scenes keep the single-cell nucleolus, which
2-3 cells lost), from the same stage-1 checkpoint; "sample stack" is the napari sample (one cell, 256 px, 12
slices), images = the demo record's 6 unseen scenes:

| memory stage | 2-cell stacks | sample stack | 3-cell images | 1-cell images | g=1 on other cells |
|---|---|---|---|---|---|
| none (demo v2) | 0.18 / 0.32 / 0.31 | 0.00 / 0.91 / 0.98 | 0.91 / 0.94 / 0.94 | 0.83 / 0.97 / 0.98 | 0.027 |
| 2-3 cells | 0.98 / 0.97 / 0.99 | 0.00 / 0.81 / 0.97 | 0.92 / 0.96 / 0.96 | 0.74 / 0.97 / 0.97 | 0.023 |
| 1-3 cells (recipe) | 0.97 / 0.98 / 0.99 | 0.39 / 0.97 / 0.99 | 0.91 / 0.94 / 0.94 | 0.86 / 0.98 / 0.99 | 0.035 |

(nucleolus / nucleus / cell at g = 0.1 / 0.5 / 1.0.) The sample stack's nucleolus is weak on single images too
(IoU 0.3-0.4 on its middle slice, before and after the memory stage).

Known fragility: with seed 0 the same recipe sits on a plateau (g=1 masks empty, IoU ~0.28 at every level) for
1000+ steps, at lr 3e-4, 5e-4 and 1e-3 alike, and also after a one-cell warm start (300 steps at 2e-3). Seed 1
leaves it by step ~800. The test model therefore uses seed 1 and the first steps of the demo's schedule.
"""
from __future__ import annotations

from pathlib import Path

from .config import UnSAMv2TrainConfig

__all__ = ["fast_test_config", "demo_config", "demo_memory_config", "DEMO_AUTOMATIC_DEFAULTS"]

#: Segment-everything settings the demo's record recommends (zoo -> ``LoadedModel.automatic_defaults``). The tiny
#: model's masks from clicks on the cytoplasm are unstable (it saw few such clicks: ``inner_click_prob``), its
#: IoU head is not calibrated, and its M2M pass sharpens the pieces. Mean best IoU per true object (4 unseen
#: 3-cell scenes + the napari sample: 15 cells and their nucleoli; CPU preset, 24 points per side), g=1 with
#: the cells / g=0.1 with the nucleoli: UnSAMv2's standard settings (IoU 0.5-0.65, stability 0.7, M2M)
#: 0.56 / 0.34; stability 0.9: 0.83 / 0.53; stability 0.9 without M2M: 0.90 / 0.00 (the IoU filter then drops
#: every small mask); the same without the IoU filter (the recipe): 0.90 / 0.53.
DEMO_AUTOMATIC_DEFAULTS = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.9, "use_m2m": False}


def _base(out_dir: str | Path, seed: int, **kw) -> UnSAMv2TrainConfig:
    data = dict(model_config="granseg_tiny.yaml", trainable="all", data="synthetic", scene_size=128,
                n_cells=[1, 3], batch_size=4, lr=3e-4, lr_min=3e-5, warmup_steps=20, weight_decay=1e-5,
                correction_clicks=1, inner_click_prob=0.75, device="cpu", seed=seed, out_dir=str(out_dir),
                progress=False)
    data.update(kw)
    return UnSAMv2TrainConfig.from_dict(data)


def fast_test_config(out_dir: str | Path, seed: int = 1, steps: int = 2000, **kw) -> UnSAMv2TrainConfig:
    """The model ``tests/conftest.py`` trains: the demo recipe (same seed and lr schedule over 2000 steps), of
    which the test suite's session fixture runs only the first 1200 steps (``trainer.fit(1200)``, one thread)."""
    return _base(out_dir, seed, steps=steps, checkpoint_name="unsamv2_test.pt", **kw)


def demo_config(out_dir: str | Path, seed: int = 1, steps: int = 2000, **kw) -> UnSAMv2TrainConfig:
    """The bundled demo model (``granseg-train demo``): the test recipe, longer."""
    return _base(out_dir, seed, steps=steps, checkpoint_name="unsamv2_demo.pt", **kw)


def demo_memory_config(out_dir: str | Path, init_checkpoint: str | Path, seed: int = 1, steps: int = 1000,
                       **kw) -> UnSAMv2TrainConfig:
    """The demo's second stage, from the first stage's checkpoint: 70 % memory episodes on 1-3 cell scenes
    (see the tables above), so the demo can propagate through stacks."""
    data = dict(init_checkpoint=str(init_checkpoint), video_prob=0.7, video_frames=3, n_cells=[1, 3])
    data.update(kw)
    return _base(out_dir, seed, steps=steps, checkpoint_name="unsamv2_demo.pt", **data)

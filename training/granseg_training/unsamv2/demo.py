"""Rebuild the bundled demo model (``granseg-train demo``) and record how it was made and how well it does.

Writes ``<out>.pt`` (float32, upstream layout with LoRA unmerged) and ``<out>.json`` next to it: the exact
command, steps, seed, training time, loss at the start and end, and the nested-scene IoU tables
(see :mod:`.evaluate`) for unseen 128 px scenes and the 256 px napari sample image.
"""
from __future__ import annotations

import importlib.resources as resources
import tempfile
import time
from pathlib import Path
from typing import Sequence

from napari_granseg.sample_data import nested_cells_sample_scene

from ..demo_record import mean_of, provenance, write_record
from .evaluate import EVAL_GRANULARITIES, nested_eval_scenes, nested_iou_table, other_cell_share
from .recipes import demo_config
from .trainer import UnSAMv2Trainer

__all__ = ["build_demo", "default_demo_path"]


def default_demo_path() -> Path:
    return Path(str(resources.files("napari_granseg") / "demo" / "unsamv2_demo.pt"))


def build_demo(steps: int | None = None, out: str | Path | None = None, device: str = "cpu",
               num_threads: int | None = None, seed: int = 1, command: Sequence[str] | None = None,
               **overrides) -> dict:
    """Train the demo recipe, write the checkpoint and its JSON metadata, return the metadata."""
    out = Path(out) if out else default_demo_path()
    with tempfile.TemporaryDirectory() as tmp:
        kw = dict(overrides, device=device, num_threads=num_threads, progress=True)
        cfg = demo_config(tmp, seed=seed, **({"steps": steps} if steps else {}), **kw)
        t0 = time.perf_counter()
        trainer = UnSAMv2Trainer(cfg)
        history = trainer.fit()
        train_s = time.perf_counter() - t0
        trainer.save(out)
    import napari_granseg as gs

    loaded = gs.load_model(out, kind="unsamv2", config=cfg.model_config, device="cpu")
    sample = nested_cells_sample_scene()  # = the napari sample "nested cells"
    tables = {
        "unseen_128px_1cell": nested_iou_table(loaded, nested_eval_scenes(6, 128, 1)).round(4).tolist(),
        "unseen_128px_2cells": nested_iou_table(loaded, nested_eval_scenes(6, 128, 2)).round(4).tolist(),
        "unseen_128px_3cells": nested_iou_table(loaded, nested_eval_scenes(6, 128, 3)).round(4).tolist(),
        "unseen_256px_4cells": nested_iou_table(loaded, nested_eval_scenes(4, 256, 4)).round(4).tolist(),
        "sample_nested_cells_256px_3cells": nested_iou_table(loaded, [sample]).round(4).tolist(),
    }
    on_other = other_cell_share(loaded, nested_eval_scenes(6, 128, 3))
    meta = provenance("unsamv2-demo", cfg, seed, trainer.device, train_s, command,
                      f"granseg-train demo --steps {cfg.steps} --seed {seed}")
    meta.update({
        "loss_first20": round(mean_of(history, "loss", slice(0, 20)), 4),
        "loss_last20": round(mean_of(history, "loss", slice(-20, None)), 4),
        "train_iou_last20": round(mean_of(history, "iou", slice(-20, None)), 4),
        "eval": {"granularities": list(EVAL_GRANULARITIES), "levels": ["nucleolus", "nucleus", "cell"],
                 "click": "nucleolus centre, one positive click, mask_threshold 0", "iou_tables": tables,
                 "share_of_g1_mask_on_other_cells_3cells": round(on_other, 4)},
    })
    return write_record(out, meta, cfg)

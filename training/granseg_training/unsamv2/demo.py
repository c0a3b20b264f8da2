"""Rebuild the bundled demo model (``granseg-train demo``) and record how it was made and how well it does.

Two stages (``recipes.py``): single images (clicks + g), then memory episodes from that checkpoint, so the demo
also propagates through stacks. ``from_stage1`` skips the first stage and starts the second from a given
checkpoint. Writes ``<out>.pt`` (float32, upstream layout with LoRA unmerged) and ``<out>.json`` next to it:
the exact command, steps, seed, training time, loss at the start and end, the nested-scene IoU tables
(see :mod:`.evaluate`) for unseen 128 px scenes and the 256 px napari sample image, and the propagation IoU on
unseen drifting stacks and on the napari sample stack.
"""
from __future__ import annotations

import hashlib
import importlib.resources as resources
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

from napari_granseg.sample_data import cell_stack_sample_scenes, nested_cells_sample_scene

from ..demo_record import mean_of, provenance, write_record
from .evaluate import (EVAL_GRANULARITIES, drifting_eval_stacks, nested_eval_scenes, nested_iou_table,
                       other_cell_share, propagation_iou)
from .recipes import DEMO_AUTOMATIC_DEFAULTS, demo_config, demo_memory_config
from .trainer import UnSAMv2Trainer

__all__ = ["build_demo", "default_demo_path"]


def default_demo_path() -> Path:
    return Path(str(resources.files("napari_granseg") / "demo" / "unsamv2_demo.pt"))


def build_demo(steps: int | None = None, out: str | Path | None = None, device: str = "cpu",
               num_threads: int | None = None, seed: int = 1, command: Sequence[str] | None = None,
               memory_steps: int | None = None, from_stage1: str | Path | None = None, **overrides) -> dict:
    """Train the two-stage demo recipe, write the checkpoint and its JSON metadata, return the metadata."""
    out = Path(out) if out else default_demo_path()
    kw = dict(overrides, device=device, num_threads=num_threads, progress=True)
    stages: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        stage1 = Path(tmp) / "stage1.pt"
        if from_stage1:
            shutil.copyfile(from_stage1, stage1)
            stages["images"] = {"from_checkpoint": str(from_stage1)}
        else:
            cfg1 = demo_config(Path(tmp) / "images", seed=seed, **({"steps": steps} if steps else {}), **kw)
            t0 = time.perf_counter()
            trainer = UnSAMv2Trainer(cfg1)
            history1 = trainer.fit()
            trainer.save(stage1)
            stages["images"] = {"steps": cfg1.steps, "train_seconds": round(time.perf_counter() - t0, 1),
                                "loss_first20": round(mean_of(history1, "loss", slice(0, 20)), 4),
                                "loss_last20": round(mean_of(history1, "loss", slice(-20, None)), 4),
                                "train_config": cfg1.to_dict() | {"out_dir": "<temporary>"}}
        stages["images"]["checkpoint_sha256"] = hashlib.sha256(stage1.read_bytes()).hexdigest()
        cfg = demo_memory_config(Path(tmp) / "memory", stage1, seed=seed,
                                 **({"steps": memory_steps} if memory_steps else {}), **kw)
        t0 = time.perf_counter()
        trainer = UnSAMv2Trainer(cfg)
        history = trainer.fit()
        memory_s = time.perf_counter() - t0
        train_s = memory_s + stages["images"].get("train_seconds", 0.0)
        trainer.save(out)
    cfg.init_checkpoint = "<stage 1 checkpoint>"
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
    propagation = {
        "unseen_2cell_stacks_128px_8slices": propagation_iou(loaded, drifting_eval_stacks()).round(4).tolist(),
        "sample_cell_stack_256px_12slices": propagation_iou(loaded, [cell_stack_sample_scenes()]).round(4).tolist(),
    }
    meta = provenance("unsamv2-demo", cfg, seed, trainer.device, train_s, command,
                      f"granseg-train demo --seed {seed}")
    meta.update({
        "stages": {"images": {k: v for k, v in stages["images"].items() if k != "train_config"},
                   "memory": {"steps": cfg.steps, "train_seconds": round(memory_s, 1)}},
        "stage1_train_config": stages["images"].get("train_config"),
        "train_tracked_iou_last20": round(mean_of([r for r in history if r.get("video")], "iou_tracked",
                                                  slice(-20, None)), 4),
        "automatic_defaults": DEMO_AUTOMATIC_DEFAULTS,
        "loss_first20": round(mean_of(history, "loss", slice(0, 20)), 4),
        "loss_last20": round(mean_of(history, "loss", slice(-20, None)), 4),
        "train_iou_last20": round(mean_of(history, "iou", slice(-20, None)), 4),
        "eval": {"granularities": list(EVAL_GRANULARITIES), "levels": ["nucleolus", "nucleus", "cell"],
                 "click": "nucleolus centre, one positive click, mask_threshold 0", "iou_tables": tables,
                 "share_of_g1_mask_on_other_cells_3cells": round(on_other, 4),
                 "propagation_iou": propagation,
                 "propagation": "click on the middle slice (first cell's nucleolus), engine.propagate, mean IoU "
                                "over the other slices with that cell's nucleolus / nucleus / cell"},
    })
    return write_record(out, meta, cfg)

"""Rebuild the bundled few-shot demo model (``granseg-train sansa-demo``) and record how it was made.

Writes ``<out>.pt`` (the whole tiny SANSA, float32: it serves as base and adapter checkpoint at once, see
``napari_granseg.zoo``) and ``<out>.json`` next to it: the exact command, steps, seed, training time, loss at
the start and end, the class-separation table on unseen scenes (:mod:`.evaluate`) and per-class IoU on the
napari sample "shapes series" (2 labelled references, 6 targets).
"""
from __future__ import annotations

import importlib.resources as resources
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from napari_granseg.io import atomic_path

from ..demo_record import mean_of, provenance, write_record
from .evaluate import class_separation
from .recipes import demo_config
from .trainer import SansaTrainer

__all__ = ["build_sansa_demo", "default_sansa_demo_path", "sample_series_iou"]


def default_sansa_demo_path() -> Path:
    return Path(str(resources.files("napari_granseg") / "demo" / "sansa_demo.pt"))


def sample_series_iou(model) -> dict[str, float]:
    """Per-class IoU on the napari sample "shapes series": its 2 labelled slices are the references (both
    classes at once, :meth:`FewShotSegmenter.segment_classes`), the 6 other slices the targets."""
    from napari_granseg.engine.fewshot import FewShotSegmenter
    from napari_granseg.sample_data import shapes_series_sample
    from napari_granseg.synthetic import shapes_scene

    (images, _, _), (refs, _, _) = shapes_series_sample()
    rng = np.random.default_rng(11)  # the sample's own seed: regenerate its ground truth
    truth = np.stack([shapes_scene(size=256, n_objects=5, rng=rng)[1] for _ in range(len(images))])
    fs = FewShotSegmenter(model, image_size=None)
    preds = fs.segment_classes(list(images[2:]), list(refs[:2]), reference_images=list(images[:2]))
    out = {}
    for cls, name in ((1, "discs"), (2, "triangles")):
        inter = sum(int(((p == cls) & (t == cls)).sum()) for p, t in zip(preds, truth[2:]))
        union = sum(int(((p == cls) | (t == cls)).sum()) for p, t in zip(preds, truth[2:]))
        out[name] = round(inter / max(union, 1), 4)
    return out


def build_sansa_demo(steps: int | None = None, out: str | Path | None = None, device: str = "cpu",
                     num_threads: int | None = None, seed: int = 0, command: Sequence[str] | None = None,
                     **overrides) -> dict:
    """Train the demo recipe, write the checkpoint and its JSON metadata, return the metadata."""
    out = Path(out) if out else default_sansa_demo_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        kw = dict(overrides, device=device, num_threads=num_threads, progress=True)
        cfg = demo_config(tmp, seed=seed, **({"steps": steps} if steps else {}), **kw)
        t0 = time.perf_counter()
        trainer = SansaTrainer(cfg)
        history = trainer.fit()
        train_s = time.perf_counter() - t0
        saved = trainer.save()
        with atomic_path(out) as tmp_out:
            shutil.copyfile(saved, tmp_out)
    import napari_granseg as gs

    loaded = gs.load_model(out, kind="sansa", config=cfg.model_config, base_checkpoint=out, device="cpu")
    sep = class_separation(loaded)
    meta = provenance("sansa-demo", cfg, seed, trainer.device, train_s, command,
                      f"granseg-train sansa-demo --steps {cfg.steps} --seed {seed}")
    meta.update({
        "loss_first20": round(mean_of(history, "loss", slice(0, 20)), 4),
        "loss_last50": round(mean_of(history, "loss", slice(-50, None)), 4),
        "query_iou_last50": round(mean_of(history, "query_iou", slice(-50, None)), 4),
        "eval": {
            "class_separation": {"what": "1 reference scene (128 px, 3 objects) per set, 3 sets x 2 unseen targets "
                                         "per class; IoU of the prediction with the referenced / the other class",
                                 "discs": [round(v, 4) for v in sep[1]], "triangles": [round(v, 4) for v in sep[2]]},
            "sample_shapes_series_iou": sample_series_iou(loaded),
        },
    })
    return write_record(out, meta, cfg)

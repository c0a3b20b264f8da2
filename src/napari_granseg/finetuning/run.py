"""``finetune(images, labels, ...) -> LoadedModel``: checks, held-back split, before score, training, after score,
the model rebuilt exactly as ``load_model`` would read it, and the checkpoint written atomically.

The returned model is a NEW module (built from the saved state dict), so every embedding cache keys it by its
own weights (``engine.embeddings.model_fingerprint``) and never serves it the base model's embeddings.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..engine.prompts import one_granularity
from ..models.loaded import LoadedModel
from ..models.unsamv2 import unsamv2_state_dict
from .checkpoint import check_out_path, state_to_model, write_finetuned
from .data import check_inputs, split_objects
from .score import click_iou
from .trainer import CancelFn, Finetuner, FinetuneSettings, ProgressFn

__all__ = ["finetune", "default_steps", "demo_replay", "check_steps"]


def check_steps(steps) -> int | None:
    """Training steps: a whole number of at least 1, or None (from the number of objects and images); never a silent
    ``int()`` of a fraction or a word."""
    if steps is None:
        return None
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps={steps!r}: give a whole number of training steps (at least 1, e.g. 300), or "
                         f"None to choose it from the number of objects and images")
    return int(steps)


def default_steps(n_objects: int, n_images: int) -> int:
    """Steps for ``n_objects`` trained objects on ``n_images`` images: 40 per object (each seen, with its
    flips/rotations, often enough to converge on the development domain: dark blobs 300 steps 0.82, 680 steps
    0.89), at least 400, at most 200 per image and never fewer than 800 as the cap. Four labelled images thus
    take at most 800 steps (a demo-size run within five minutes on a CPU); more labelled images get more steps,
    which they need: 16 membrane images scored 0.70 at 800 steps and 0.83 at 3000 (docs/benchmarks.md)."""
    return int(np.clip(40 * n_objects, 400, max(800, 200 * n_images)))


def demo_replay(base: LoadedModel, n: int = 4) -> list[np.ndarray]:
    """For the bundled demo model, a few scenes of the synthetic data it was trained on (seeds no test or
    benchmark uses): what it should keep segmenting as before. Other models: none (pass ``keep_images``)."""
    if not base.is_demo:
        return []
    from ..synthetic import nested_cells_scene

    return [nested_cells_scene(size=128, n_cells=3, seed=9000 + i).image for i in range(n)]


def _base_model(model, device) -> LoadedModel:
    from ..api import get_model
    from ..zoo import ZOO

    def refuse(name: str, kind: str) -> ValueError:
        return ValueError(f"{name} is a {kind} model: fine-tuning needs an UnSAMv2 model (the default, "
                          f"'unsamv2-plus', or a file loaded with kind='unsamv2')")

    spec = ZOO.get(model) if isinstance(model, str) else None
    if spec is not None and spec.kind != "unsamv2":  # a zoo name says its kind: refused before loading
        raise refuse(spec.name, spec.kind)
    loaded = get_model(model, device=device)
    if loaded.kind != "unsamv2":
        raise refuse(loaded.name, loaded.kind)
    if str(device) != "auto" and loaded.device != torch.device(device):
        loaded = replace(loaded, module=loaded.module.to(device), device=torch.device(device))
    return loaded


def finetune(images, labels, model: LoadedModel | str | None = None, granularity: float = 1.0,
             out: str | Path | None = None, steps: int | None = None, progress: ProgressFn | None = None,
             cancel: CancelFn | None = None, device: str = "auto", settings: FinetuneSettings | None = None,
             name: str | None = None, keep_images=None) -> LoadedModel:
    """Fine-tune an UnSAMv2 model on instance labels (0 = background) and return the new model.

    images / labels: sequences of 2D images and their label images (or (Z, H, W) stacks, one slice each).
    granularity: what the labels stand for (1.0 whole objects; a person labelling nuclei inside cells gives
    a lower value). out: write the checkpoint there (UnSAMv2's released layout; ``load_model(out)`` reads it
    back with the same results); an existing file is replaced only if this tool wrote it. steps: training
    steps (None: ``settings.steps`` if set, else :func:`default_steps`, from the number of objects and images).
    progress(step, total, loss, eta_seconds), cancel() -> bool:
    callbacks (cancel raises :class:`~.trainer.FinetuneCancelled`, nothing written). settings: the recipe
    (:class:`FinetuneSettings`). keep_images: images of the kind the model already segments well (say, your
    other experiments): it keeps its own results on them (None: for the demo model, samples of its synthetic
    training scenes; otherwise none). The result's ``info["finetune"]`` holds the before/after click IoU on the
    held-back objects (never trained on) at the default precision.
    """
    granularity = one_granularity(granularity, lists="fine-tuning takes what your labels stand for (1.0 whole "
                                                    "objects, lower for parts)")
    steps = check_steps(steps)
    imgs, labs = check_inputs(images, labels)
    if out is not None:
        check_out_path(out)
    base = _base_model(model, device)
    settings = replace(settings or FinetuneSettings())
    trained, held = split_objects(labs, settings.held_fraction, settings.seed)
    if steps is None:
        steps = check_steps(settings.steps)
    settings.steps = steps if steps is not None else default_steps(len(trained), len(imgs))
    t0 = time.perf_counter()
    before = click_iou(base, imgs, labs, held, granularity, settings.precision)
    if keep_images is None:
        keep_images = demo_replay(base)
    tuner = Finetuner(base, imgs, labs, trained, granularity, settings,
                      keep_images=[np.asarray(k) for k in keep_images])
    history = tuner.fit(progress=progress, cancel=cancel)
    encoder_trained, used = tuner.encoder_choice, tuner.settings
    state = unsamv2_state_dict(tuner.model)
    del tuner
    loaded = state_to_model(state, base, name=name or (Path(out).stem if out else f"{base.name}-finetuned"))
    after = click_iou(loaded, imgs, labs, held, granularity, settings.precision)
    record = {"base": base.name, "granularity": float(granularity), "steps": settings.steps,
              "objects_trained": len(trained), "objects_held_back": len(held), "images": len(imgs),
              "held_back_iou_before": before, "held_back_iou_after": after, "precision": settings.precision,
              "seconds": round(time.perf_counter() - t0, 1), "settings": used.to_dict(),
              "encoder_trained": encoder_trained,
              "last_loss": history[-1]["loss"] if history else None}
    loaded.info["finetune"] = record
    if out is not None:
        if cancel is not None and cancel():
            from .trainer import FinetuneCancelled

            raise FinetuneCancelled("fine-tuning cancelled: nothing was written")
        write_finetuned(state, out, loaded, json.loads(json.dumps(record, default=str)))
        loaded.checkpoint = Path(out)
    return loaded

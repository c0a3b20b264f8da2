"""The state of the "Fine-tune (UnSAMv2)" widget, without Qt or napari: what to train on, the model's name, the
run's progress and its result. The dock (:mod:`.finetune`) only reads controls into it and shows it.

Why apart: everything a run decides (the name and where the model goes, what the progress line says, what the
result line says) is testable without a window, and the view stays a thin layer of controls.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..finetuning.advice import next_step_advice

__all__ = ["FinetuneSession", "training_pairs"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


def training_pairs(image: np.ndarray, labels: np.ndarray, rgb: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, labels) 2D pairs from one image layer's data and its Labels layer's: a 2D image gives one pair, a
    stack gives its slices that hold labels (a person labels a few slices of a stack)."""
    image, labels = np.asarray(image), np.asarray(labels)
    if labels.shape != image.shape[: labels.ndim] or labels.ndim not in (2, 3) or (rgb and image.ndim != labels.ndim + 1):
        raise ValueError(f"the Labels layer {labels.shape} does not match its image {image.shape}: pick the Labels "
                         f"layer drawn on that image")
    if labels.ndim == 2:
        return [(image, labels)]
    return [(image[z], labels[z]) for z in range(labels.shape[0]) if (labels[z] > 0).any()]


@dataclass
class FinetuneSession:
    """granularity: what the labels stand for; name: the new model's name (its file in the model cache);
    model: the model to start from (None: the default); steps: None = from the number of objects."""

    granularity: float = 1.0
    name: str = "my-finetuned"
    model: str | None = None
    steps: int | None = None
    progress: tuple[int, int, float, float] = (0, 0, float("nan"), float("nan"))
    result: Any = None
    error: str = ""
    history: list = field(default_factory=list)

    def output_path(self) -> Path:
        """Where the model will be saved (the model cache's fine-tuned folder), or a ValueError saying why not."""
        from .. import zoo

        if not _NAME.match(self.name or ""):
            raise ValueError(f"model name {self.name!r}: use letters, digits, '.', '_', '+' or '-' (no spaces, "
                             f"at most 64 characters)")
        if self.name in zoo.ZOO:
            raise ValueError(f"{self.name!r} is a model of the zoo: choose another name")
        return zoo.finetuned_dir() / f"{self.name}.pt"

    def on_progress(self, step: int, total: int, loss: float, eta: float) -> None:
        self.progress = (step, total, loss, eta)

    def progress_text(self) -> str:
        step, total, loss, eta = self.progress
        if not total:
            return "scoring the model before training, encoding the images…"
        return f"step {step}/{total} · loss {loss:.3f} · about {_duration(eta)} left"

    def run(self, pairs: list[tuple[np.ndarray, np.ndarray]], cancel: Callable[[], bool]):
        """Train (blocking: call it in a worker) and save; returns the new LoadedModel."""
        from ..finetuning.run import finetune

        out = self.output_path()
        self.progress, self.result, self.error = (0, 0, float("nan"), float("nan")), None, ""
        model = finetune([p[0] for p in pairs], [p[1] for p in pairs], model=self.model or None,
                         granularity=self.granularity, out=out, steps=self.steps, progress=self.on_progress,
                         cancel=cancel, name=self.name)
        self.result = model
        return model

    def summary(self) -> str:
        """The result line: the before/after score on the held-back objects, and where the model is."""
        if self.result is None:
            return ""
        rec = self.result.info["finetune"]
        advice = next_step_advice(rec)
        return (f"held-back objects ({rec['objects_held_back']}, never trained on), click IoU at g="
                f"{rec['granularity']:g}: {rec['held_back_iou_before']:.2f} before → {rec['held_back_iou_after']:.2f} "
                f"after. Saved as '{self.name}' ({self.result.checkpoint}): pick it in any widget's model list."
                + (f" {advice}" if advice else ""))


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"

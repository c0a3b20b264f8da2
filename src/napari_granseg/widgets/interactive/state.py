"""The interactive session's state as immutable values: what the view renders and the console reads.

Why values: the session replaces them as a whole (``dataclasses.replace``) and publishes one
:class:`SessionState` through one signal, so the view never reads half-updated state and never writes any.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ModelState", "Options", "CommitRecord", "Event", "SessionState", "PHASES"]

#: the life of the model: nothing yet, being loaded (or its predictor built), usable, failed to load
PHASES = ("idle", "loading", "ready", "failed")


@dataclass(frozen=True)
class ModelState:
    """The model as ONE value: its phase, what is loaded and where it runs."""

    phase: str = "idle"
    model: Any = None                  # the LoadedModel (None for a model on a remote worker)
    predictor: Any = None              # what answers clicks (a GranularityPredictor or a RemotePredictor)
    name: str = ""
    device: str = ""
    where: Any = None                  # None: this machine; else the remote session it runs on
    is_demo: bool = False
    has_granularity: bool = True
    error: str = ""
    serial: int = 0                    # each load or injection gets a new serial; late results of older ones lose

    @property
    def ready(self) -> bool:
        return self.phase == "ready" and self.predictor is not None

    @property
    def description(self) -> str:
        """The model line of the widget."""
        if self.phase == "idle":
            return "no model loaded"
        if self.phase == "loading":
            return f"loading {self.name or 'the default model'}…"
        if self.phase == "failed":
            return f"loading failed: {self.error}"
        place = f"{self.device} of {getattr(self.where, 'address', self.where)}" if self.where is not None \
            else self.device
        text = f"{self.name} on {place}" + (" (DEMO model, see the banner above)" if self.is_demo else "")
        if not self.has_granularity:
            text += " | stock SAM 2: no granularity input, the slider is ignored"
        return text

    @property
    def banner(self) -> str:
        """The DEMO warning ('' for a real model)."""
        if not (self.phase == "ready" and self.is_demo):
            return ""
        if self.where is not None:
            return (f"DEMO model ({self.name}) on the GPU worker: trained on synthetic cells only. Put a real "
                    f"checkpoint in the worker's cache (docs/remote.md).")
        return (f"DEMO model ({self.name}): trained on synthetic cells only. For real images load "
                f"'unsamv2-plus' (see docs/checkpoints.md).")


@dataclass(frozen=True)
class Options:
    """The person's choices: granularity, pointer mode, prompt sign, live preview, refine, precision."""

    granularity: float = 0.5
    mode: str = "click"
    negative: bool = False
    live: bool = True
    refine: bool = False
    precision: str = "auto"


@dataclass(frozen=True)
class CommitRecord:
    """What the last commit wrote, for propagation and the console."""

    image_name: str
    labels_name: str
    label_id: int
    index: tuple[int, ...]
    points_xy: np.ndarray
    point_labels: np.ndarray
    granularity: float | None
    box: np.ndarray | None = None
    n_pixels: int = 0


@dataclass(frozen=True)
class Event:
    """What just happened: "preview" (shown or cleared), "committed" (value: label id), "propagated" (value:
    slices written), "embedded" (value: slices or tiles), "model" (a model is ready), "message" (value:
    (level, text), a notification)."""

    kind: str
    value: Any = None


@dataclass(frozen=True)
class SessionState:
    """One snapshot of the session (see the module docstring)."""

    model: ModelState
    options: Options
    settings: Any                      # the image plan's ImageSettings (scale, tile, channels)
    image: str | None
    labels: str | None
    channel_choices: tuple[str, ...]
    prompts: int
    preview_pixels: int | None
    preview_refine: int | None
    last_commit: CommitRecord | None
    last_message: tuple[str, str] | None
    status: str
    task_running: bool
    busy: bool
    can_commit: bool
    can_next: bool
    can_undo: bool
    can_run: bool
    can_embed: bool
    can_propagate: bool
    events: tuple[Event, ...] = field(default_factory=tuple)

    def summary(self, slice_index: tuple[int, ...] | None = None) -> dict:
        """A plain dict for the console."""
        rec = self.last_commit
        return {
            "image": self.image,
            "slice": slice_index,
            "granularity": self.options.granularity,
            "mode": self.options.mode,
            "prompts": self.prompts,
            "preview_pixels": self.preview_pixels,
            "labels": self.labels,
            "model": None if self.model.model is None else repr(self.model.model),
            "model_phase": self.model.phase,
            "last_commit": None if rec is None else
            {"label": rec.label_id, "slice": rec.index, "granularity": rec.granularity},
            "busy": self.busy,
        }

"""The session's status line and button states, from a few facts: what happened last and the true next step.

Why a module: the next step depends on the model, the image, the preview, where a canvas click goes and the
options; written once here, the session only gathers the facts and the view only shows the text.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .._common import is_user_error
from .._compute import compute_error_text, is_compute_error
from .model_view import ImageSettings
from .prompt_layers import POINTS_NAME
from .state import CommitRecord, Event, ModelState, Options, SessionState

__all__ = ["Facts", "next_step", "build_state", "error_text"]

log = logging.getLogger("napari_granseg.widgets")

NEXT_STEPS = {"click": "click an object (Shift+click: negative)", "box": "drag a box around an object",
              "scribble": "draw a line over an object"}


@dataclass(frozen=True)
class Facts:
    """What the status depends on, read once per state."""

    model: ModelState
    image: Any                  # the ImageInfo, or None
    shown: Any                  # the PreviewResult on screen, or None
    computing: bool             # a preview is being computed (or a commit waits for it)
    prompts: int
    click_target: str | None    # None: a canvas click adds a prompt; else the layer it goes to ("" none)
    can_undo: bool
    idle: bool                  # no embedding or propagation running
    tiled: bool                 # the image is tiled with the Scale setting


def next_step(f: Facts, options: Options) -> str:
    if not f.model.ready:
        return "loading the model…" if f.model.phase == "loading" else "no model: pick one and press Load"
    if f.image is None:
        return "open an image (File > Open, or File > Open Sample > napari-granseg)"
    if f.computing:
        return "computing the preview…"
    if f.click_target is not None:
        where = f"clicks now go to layer {f.click_target!r}" if f.click_target else "no layer is selected"
        return f"{where}: press Click, Box or Scribble (or select '{POINTS_NAME}') to segment by clicking"
    if f.shown is not None:
        refine = f.shown.request.refine_label
        return (f"C replaces label {refine}" if refine else "C commits it as a new label") + ", N discards it"
    if f.prompts and not options.live:
        return "add more prompts, then press Run (R)"
    return NEXT_STEPS[options.mode]


def build_state(f: Facts, options: Options, settings: ImageSettings, labels: str | None, choices: tuple[str, ...],
                last_commit: CommitRecord | None, last_message: tuple[str, str] | None, action: str, busy: bool,
                events: tuple[Event, ...]) -> SessionState:
    """The snapshot the session publishes."""
    import numpy as np

    if action and f.can_undo and not action.startswith(("preview", "undone", "computing")):
        action += "; Ctrl+Z undoes it"
    step = next_step(f, options)
    has_model, shown = f.model.ready, f.shown
    is_stack = f.image is not None and f.image.ndim == 3
    return SessionState(
        model=f.model, options=options, settings=settings, image=None if f.image is None else f.image.name, labels=labels,
        channel_choices=choices, prompts=f.prompts,
        preview_pixels=None if shown is None else int(np.count_nonzero(shown.mask)),
        preview_refine=None if shown is None else shown.request.refine_label, last_commit=last_commit,
        last_message=last_message, status=f"{action}. Next: {step}" if action else step,
        task_running=not f.idle, busy=busy,
        can_commit=has_model and (shown is not None or (f.computing and bool(f.prompts))),
        can_next=bool(f.prompts) or shown is not None, can_undo=f.can_undo, can_run=has_model and bool(f.prompts),
        can_embed=has_model and f.idle and (is_stack or f.tiled),
        can_propagate=has_model and f.idle and last_commit is not None and len(last_commit.index) == 1,
        events=tuple(events))


def error_text(exc: BaseException) -> tuple[str, bool]:
    """(what the person reads, whether it also belongs in the status line). A refused address or a lost worker
    and a user mistake show their message (it says what to do); anything else is a bug: its traceback goes to
    the log and the person reads "internal error, please report"."""
    if is_compute_error(exc):
        return compute_error_text(exc), True
    if is_user_error(exc):
        return str(exc), False
    log.error("napari-granseg: interactive segmentation failed", exc_info=exc)
    return f"internal error, please report it (with the log): {type(exc).__name__}: {exc}", False

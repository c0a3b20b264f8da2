"""Propagate a prompted object through z or t with SAM 2's video predictor, from in-memory arrays.

Peer tools write every slice to a temporary JPEG folder because ``SAM2VideoPredictor.init_state`` only reads
files. Here the frames come from the numpy stack itself: :class:`InMemoryFrames` normalises one slice when
SAM 2 asks for it (nothing written to disk, no full float copy of the stack), and is handed to SAM 2's own
``init_state`` in place of its file loader. Propagation runs forward and backward from the prompted slices.
For UnSAMv2 models the object's granularity is appended on every frame, as upstream.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

import sam2.sam2_video_predictor as _video_module

from ..devices import autocast_for
from ..models.loaded import LoadedModel
from .normalize import ImageShapeError, check_image, intensity_range, to_model_rgb_range

__all__ = ["InMemoryFrames", "ObjectPrompt", "propagate", "PropagationCancelled"]

_IMG_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
_IMG_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
_loader_lock = threading.Lock()


class PropagationCancelled(RuntimeError):
    """Raised when the ``cancel`` callback asks to stop; masks computed so far are discarded."""


class InMemoryFrames:
    """A lazy sequence of SAM 2 video frames (3, S, S) made from a (T, H, W[, 3]) array."""

    def __init__(self, stack: np.ndarray, image_size: int, device: torch.device | str = "cpu",
                 intensity: tuple[float, float] | None = None):
        stack = np.asarray(stack)
        if stack.ndim not in (3, 4) or (stack.ndim == 4 and stack.shape[-1] not in (3, 4)):
            raise ImageShapeError(f"expected a stack shaped (T, H, W) or (T, H, W, 3), got {stack.shape}; "
                                  f"for 4D data (T, Z, H, W) pick one time point or one z first")
        check_image(stack[0])
        self.stack = stack
        self.image_size = image_size
        self.device = torch.device(device)
        if intensity is None:
            intensity = (0.0, 255.0) if stack.dtype == np.uint8 else intensity_range(stack)
        self.intensity = intensity

    def __len__(self) -> int:
        return int(self.stack.shape[0])

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.stack.shape[1]), int(self.stack.shape[2])

    def __getitem__(self, idx: int) -> torch.Tensor:
        rgb = to_model_rgb_range(self.stack[idx], *self.intensity)
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                          antialias=True)[0]
        return ((x - _IMG_MEAN) / _IMG_STD).to(self.device)


@dataclass
class ObjectPrompt:
    """Clicks on one slice for one object. points: [[x, y], ...] pixels; labels 1/0."""

    frame: int
    points: Sequence[Sequence[float]] = ()
    labels: Sequence[int] | None = None
    box: Sequence[float] | None = None
    obj_id: int = 1
    granularity: float | None = None
    mask: np.ndarray | None = field(default=None, repr=False)


def _init_state(predictor, frames: InMemoryFrames) -> dict:
    """Run SAM 2's own ``init_state`` with our frames in place of its JPEG/MP4 loader."""
    def load_from_memory(**_kwargs):
        h, w = frames.hw
        return frames, h, w

    with _loader_lock:
        original = _video_module.load_video_frames
        _video_module.load_video_frames = load_from_memory
        try:
            return predictor.init_state(video_path="<in-memory stack>")
        finally:
            _video_module.load_video_frames = original


def _run(predictor, state, prompts: Sequence[ObjectPrompt], n_frames: int, threshold: float,
         step: Callable[[], None]) -> dict[int, dict[int, np.ndarray]]:
    for p in prompts:
        if not 0 <= p.frame < n_frames:
            raise ValueError(f"prompt on slice {p.frame} but the stack has {n_frames} slices")
        if p.mask is not None:
            predictor.add_new_mask(state, frame_idx=p.frame, obj_id=p.obj_id, mask=np.asarray(p.mask, bool))
        else:
            predictor.add_new_points_or_box(
                state, frame_idx=p.frame, obj_id=p.obj_id,
                points=np.asarray(p.points, np.float32).reshape(-1, 2) if len(p.points) else None,
                labels=np.asarray(p.labels if p.labels is not None else [1] * len(p.points), np.int32)
                if len(p.points) else None,
                box=None if p.box is None else np.asarray(p.box, np.float32))
    out: dict[int, dict[int, np.ndarray]] = {}
    start = min(p.frame for p in prompts)
    for reverse in (False, True):
        for frame_idx, obj_ids, masks in predictor.propagate_in_video(state, start_frame_idx=start, reverse=reverse):
            out.setdefault(frame_idx, {})
            for k, obj_id in enumerate(obj_ids):
                out[frame_idx][obj_id] = (masks[k, 0] > threshold).cpu().numpy()
            step()
    return out


def propagate(model: LoadedModel | torch.nn.Module, stack: np.ndarray, prompts: Sequence[ObjectPrompt] | ObjectPrompt,
              granularity: float | None = None, threshold: float | None = None,
              progress: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
              autocast: bool | None = None) -> np.ndarray:
    """Propagate objects through ``stack`` and return an int32 label stack (T, H, W), ids = ``obj_id``.

    ``granularity`` (UnSAMv2): applies to every object without its own ``ObjectPrompt.granularity``;
    objects with different g are propagated in separate passes (g conditions every frame).
    ``threshold``: logit threshold (default -1 for UnSAMv2 as upstream's video path, 0 for SAM 2).
    ``progress(done, total)`` is called after each frame; ``cancel()`` returning True stops with
    :class:`PropagationCancelled`.
    """
    loaded = model if isinstance(model, LoadedModel) else None
    module = model.module if loaded else model
    if not hasattr(module, "propagate_in_video"):
        raise TypeError("propagation needs an UnSAMv2 or SAM 2 model from gs.load_model")
    prompts = [prompts] if isinstance(prompts, ObjectPrompt) else list(prompts)
    if not prompts:
        raise ValueError("give at least one ObjectPrompt (a slice index and clicks on it)")
    has_g = hasattr(module, "granularity_context")
    if threshold is None:
        threshold = -1.0 if has_g else 0.0
    device = next(module.parameters()).device
    frames = InMemoryFrames(stack, int(module.image_size), device)
    groups: dict[float | None, list[ObjectPrompt]] = {}
    for p in prompts:
        g = p.granularity if p.granularity is not None else granularity
        if g is not None and not has_g:
            raise ValueError("granularity needs an UnSAMv2 model; this is a stock SAM 2 model")
        groups.setdefault(g, []).append(p)
    total = 2 * len(frames) * len(groups)
    done = 0

    def step():
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)
        if cancel is not None and cancel():
            raise PropagationCancelled("propagation cancelled; no labels were written")

    labels = np.zeros((len(frames), *frames.hw), np.int32)
    for g, group in groups.items():
        ctx = module.granularity_context(g) if has_g else _null()
        with torch.inference_mode(), autocast_for(device, autocast), ctx:
            state = _init_state(module, frames)
            result = _run(module, state, group, len(frames), threshold, step)
        for frame_idx, objs in result.items():
            for obj_id, mask in objs.items():
                labels[frame_idx][mask & (labels[frame_idx] == 0)] = obj_id
    return labels


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def iter_slices(stack: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(index, slice) pairs of a (T, H, W[, 3]) stack."""
    for i in range(np.asarray(stack).shape[0]):
        yield i, stack[i]

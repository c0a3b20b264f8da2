"""Propagate a prompted object through z or t with SAM 2's video predictor, from in-memory arrays.

Peer tools write every slice to a temporary JPEG folder because ``SAM2VideoPredictor.init_state`` only reads
files. Here the frames come from the numpy stack itself: :class:`InMemoryFrames` turns one slice into model
input when SAM 2 asks for it (:func:`~.normalize.model_input` with ONE intensity range for the whole stack:
nothing written to disk, no float copy of the stack), and :func:`init_state_in_memory` builds SAM 2's
inference state around them (no file loader, nothing patched). Propagation runs forward and backward from
the prompted slices, every model call in ``devices.precision_context``. For UnSAMv2 models the object's
granularity conditions every frame, as upstream (``UnSAMv2Model.granularity_context``).
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ..devices import check_precision, precision_context
from ..models.encoder_precision import forward_image
from ..models.loaded import LoadedModel
from .normalize import ImageShapeError, check_image, check_intensity, model_input, stack_intensity_range
from .prompts import as_box, as_granularities, as_points

__all__ = ["InMemoryFrames", "ObjectPrompt", "propagate", "PropagationCancelled", "init_state_in_memory",
           "EncodedFrameCache"]


class PropagationCancelled(RuntimeError):
    """Raised when the ``cancel`` callback asks to stop; the returned labels are discarded (an ``out=`` array
    keeps the frames written before the stop)."""


class InMemoryFrames:
    """A lazy sequence of SAM 2 video frames (3, S, S) made from a (T, H, W[, 3]) array.

    ``intensity``: the (low, high) grey range of the whole stack (default: :func:`~.normalize.stack_intensity_range`
    of the stack, uint8: 0..255), so every slice is scaled alike, as in the preview and the CLI.
    """

    def __init__(self, stack: np.ndarray, image_size: int, device: torch.device | str = "cpu",
                 intensity: tuple[float, float] | None = None):
        if not (hasattr(stack, "shape") and hasattr(stack, "dtype")):
            stack = np.asarray(stack)  # lists; numpy, dask and zarr arrays stay as they are (read per slice)
        if len(stack.shape) not in (3, 4) or (len(stack.shape) == 4 and stack.shape[-1] not in (3, 4)):
            raise ImageShapeError(f"expected a stack shaped (T, H, W) or (T, H, W, 3), got {stack.shape}; "
                                  f"for 4D data (T, Z, H, W) pick one time point or one z first")
        check_image(np.asarray(stack[0]))
        self.stack = stack
        self.image_size = image_size
        self.device = torch.device(device)
        intensity = check_intensity(intensity)  # the rule gs.segment applies: finite, low below high
        if intensity is None:
            intensity = stack_intensity_range(stack) or (0.0, 255.0)
        self.intensity = (float(intensity[0]), float(intensity[1]))

    def __len__(self) -> int:
        return int(self.stack.shape[0])

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.stack.shape[1]), int(self.stack.shape[2])

    def __getitem__(self, idx: int) -> torch.Tensor:
        return model_input(np.asarray(self.stack[idx]), self.image_size, self.device, intensity=self.intensity)[0]


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


class EncodedFrameCache(dict):
    """The state's ``cached_features`` (one frame, as SAM 2 keeps it), filled by the image encoder in the
    encoder stage of the precision policy.

    Why: SAM 2's video code calls ``forward_image`` itself, inside the engine's context for every other model
    call; the encoder is the one stage "auto" runs in bf16 (``devices.PRECISIONS``), so the features are
    computed here, on SAM 2's own lookup (``cached_features.get(frame_idx)``), never missing.
    """

    def __init__(self, predictor, frames: InMemoryFrames, precision: str):
        super().__init__()
        self.predictor, self.frames, self.precision = predictor, frames, precision

    def get(self, frame_idx, default=None):  # type: ignore[override]
        if frame_idx not in self:
            device = self.predictor.device
            image = self.frames[frame_idx].to(device).float().unsqueeze(0)
            backbone_out = forward_image(self.predictor, image, self.precision)
            self.clear()
            self[frame_idx] = (image, backbone_out)
        return self[frame_idx]


def init_state_in_memory(predictor, frames: InMemoryFrames, precision: str = "fp32") -> dict:
    """SAM 2's inference state for ``frames``, as ``SAM2VideoPredictor.init_state`` builds it from files.

    ``init_state`` reads frames only through its file loader; the rest of the state is plain bookkeeping,
    set here key by key (a test checks the keys against ``init_state``'s own on a real frame folder).
    Frames stay in memory and are normalised on demand; the state lives on the model's device. The image
    encoder runs in ``precision``'s encoder stage (:class:`EncodedFrameCache`).
    """
    h, w = frames.hw
    device = predictor.device
    state = {
        "images": frames, "num_frames": len(frames), "offload_video_to_cpu": False,
        "offload_state_to_cpu": False, "video_height": h, "video_width": w, "device": device,
        "storage_device": device, "point_inputs_per_obj": {}, "mask_inputs_per_obj": {},
        "cached_features": EncodedFrameCache(predictor, frames, precision),
        "constants": {}, "obj_id_to_idx": OrderedDict(), "obj_idx_to_id": OrderedDict(), "obj_ids": [],
        "output_dict_per_obj": {}, "temp_output_dict_per_obj": {}, "frames_tracked_per_obj": {},
    }
    predictor._get_image_feature(state, frame_idx=0, batch_size=1)  # warm-up, as init_state does
    return state


def _add_prompts(predictor, state, prompts: Sequence[ObjectPrompt], frames: InMemoryFrames) -> None:
    for p in prompts:
        if not 0 <= p.frame < len(frames):
            raise ValueError(f"prompt on slice {p.frame} but the stack has {len(frames)} slices")
        if p.mask is not None:
            mask = np.asarray(p.mask, bool)
            if mask.shape != frames.hw:
                raise ValueError(f"ObjectPrompt.mask has shape {mask.shape}; give a mask of the slice's shape "
                                 f"{frames.hw}")
            if not mask.any():
                raise ValueError(f"ObjectPrompt.mask for object {p.obj_id} on slice {p.frame} has no True pixel: "
                                 f"give the object's mask, or points=[[x, y]] / a box instead")
            predictor.add_new_mask(state, frame_idx=p.frame, obj_id=p.obj_id, mask=mask)
            continue
        points = None if p.points is None or not len(p.points) else p.points
        coords, labels = as_points(points, p.labels if points is not None else None, frames.hw)
        box = as_box(p.box, frames.hw)
        if coords is None and box is None:
            raise ValueError(f"the ObjectPrompt for object {p.obj_id} on slice {p.frame} is empty: give points="
                             f"[[x, y]], a box=[x0, y0, x1, y1] or a mask")
        predictor.add_new_points_or_box(state, frame_idx=p.frame, obj_id=p.obj_id, points=coords, labels=labels,
                                        box=box)


def _run(predictor, state, start: int, threshold: float, write: Callable[[int, list, torch.Tensor], None],
         step: Callable[[], None]) -> None:
    """Run SAM 2's propagation forward then backward from ``start``; every frame goes to ``write`` as it comes
    (so nothing of the stack's size is held here)."""
    for reverse in (False, True):
        for frame_idx, obj_ids, masks in predictor.propagate_in_video(state, start_frame_idx=start, reverse=reverse):
            write(frame_idx, list(obj_ids), masks)
            step()


def propagate(model: LoadedModel | torch.nn.Module, stack: np.ndarray, prompts: Sequence[ObjectPrompt] | ObjectPrompt,
              granularity: float | None = None, threshold: float | None = None,
              progress: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
              precision: str = "auto", intensity: tuple[float, float] | None = None, out=None) -> np.ndarray:
    """Propagate objects through ``stack`` and return an int32 label stack (T, H, W), ids = ``obj_id``.

    ``granularity`` (UnSAMv2): applies to every object without its own ``ObjectPrompt.granularity``;
    objects with different g are propagated in separate passes (g conditions every frame).
    ``threshold``: logit threshold (default -1 for UnSAMv2 as upstream's video path, 0 for SAM 2).
    ``precision``: "auto" | "fp32" | "bf16" (``devices.PRECISIONS``: "auto" runs the image encoder's bulk in
    bf16 where it is native, its border-deciding parts, the memory path and the decoder in float32).
    ``intensity``: the stack's (low, high) grey range (default: computed from the stack, one for all slices).
    ``progress(done, total)`` is called after each frame; ``cancel()`` returning True stops with
    :class:`PropagationCancelled`.
    ``out``: where the labels go, written one frame at a time as SAM 2 yields it: a (T, H, W) integer array,
    e.g. ``zarr.zeros`` for a stack larger than memory (default: a new numpy array); every frame of it is
    replaced, so old values never mix with the result. The stack
    itself is read one slice at a time (numpy, dask, zarr), so with ``out`` nothing of the stack's size is held
    in memory but SAM 2's own per-frame memory features. ``out`` is returned.
    """
    check_precision(precision)
    loaded = model if isinstance(model, LoadedModel) else None
    module = model.module if loaded else model
    if not hasattr(module, "propagate_in_video"):
        raise TypeError("propagation needs an UnSAMv2 or SAM 2 model from gs.load_model")
    prompts = [prompts] if isinstance(prompts, ObjectPrompt) else list(prompts)
    if not prompts:
        raise ValueError("give at least one ObjectPrompt (a slice index and clicks on it)")
    if not all(isinstance(p, ObjectPrompt) for p in prompts):
        raise TypeError("prompts must be ObjectPrompt(frame=..., points=[[x, y]], ...) objects")
    has_g = hasattr(module, "granularity_context")
    if threshold is None:
        threshold = -1.0 if has_g else 0.0
    device = next(module.parameters()).device
    frames = InMemoryFrames(stack, int(module.image_size), device, intensity=intensity)
    groups: dict[float | None, list[ObjectPrompt]] = {}
    for p in prompts:
        g = p.granularity if p.granularity is not None else granularity
        if g is not None:
            if not has_g:
                raise ValueError("granularity needs an UnSAMv2 model; this is a stock SAM 2 model")
            g = float(as_granularities(g, name="granularity")[0])
        groups.setdefault(g, []).append(p)
    total = (len(frames) + 1) * len(groups)  # sam2 visits the start frame in both directions
    done = 0

    def step():
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)
        if cancel is not None and cancel():
            raise PropagationCancelled("propagation cancelled; no labels were returned")

    shape = (len(frames), *frames.hw)
    if out is None:
        out = np.zeros(shape, np.int32)
    elif tuple(out.shape) != shape:
        raise ValueError(f"out has shape {tuple(out.shape)}; give an array of the stack's (T, H, W) "
                         f"shape {shape}")
    written: set[int] = set()  # frames this call wrote: only their values are kept under later objects

    def before(frame_idx: int) -> np.ndarray:
        if frame_idx in written:
            return np.asarray(out[frame_idx]).astype(np.int32, copy=True)
        return np.zeros(frames.hw, np.int32)

    for g, group in groups.items():
        start = min(p.frame for p in group)
        before_start: list[np.ndarray] = []  # the start frame comes twice (both directions): the last one counts

        def write(frame_idx: int, obj_ids: list, masks: torch.Tensor, start: int = start,
                  before_start: list = before_start) -> None:
            if frame_idx == start and not before_start:
                before_start.append(before(start))
            frame = before_start[0].copy() if frame_idx == start else before(frame_idx)
            for k, obj_id in enumerate(obj_ids):  # earlier objects and earlier passes keep their pixels
                mask = (masks[k, 0] > threshold).cpu().numpy()
                frame[mask & (frame == 0)] = obj_id
            out[frame_idx] = frame
            written.add(frame_idx)

        ctx = module.granularity_context(g) if has_g else contextlib.nullcontext()
        with torch.inference_mode(), precision_context(device, precision), ctx:
            state = init_state_in_memory(module, frames, precision)
            _add_prompts(module, state, group, frames)
            _run(module, state, start, threshold, write, step)
    return out


def iter_slices(stack: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(index, slice) pairs of a (T, H, W[, 3]) stack."""
    for i in range(int(stack.shape[0])):
        yield i, stack[i]

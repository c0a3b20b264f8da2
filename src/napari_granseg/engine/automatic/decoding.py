"""The model side of segment everything: a grid of single clicks decoded in batches at one granularity.

Why its own module: this is the only part that touches the model, so it is the only part that needs the
predictor's lock (a widget worker and the napari console share one predictor), the precision setting, and
the cancel/progress checkpoints between decoder batches. Everything after decoding is in
:mod:`.postprocess`.

Same batches as Meta's ``SAM2AutomaticMaskGenerator`` (and UnSAMv2's fork of it, which adds the granularity
token); faster with the same masks because:

- the embedding comes from the predictor's cache (``set_image`` on an image seen before skips the encoder,
  so a hierarchy of several g values encodes once);
- with M2M refinement the first-pass masks are never upsampled (sam2 upsamples them and throws them away);
- with a granularity model the decoder yields one mask per point instead of SAM's three.

Cost (``N = points_per_side ** 2`` prompts per crop; see docs/everything.md): decoder passes
``N * (1 + use_m2m)`` per crop, encoder passes ``1 + sum_i 4**i`` for ``crop_n_layers``.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import numpy as np
import torch
from sam2.utils.amg import MaskData, batch_iterator, generate_crop_boxes

from ...devices import check_precision, precision_context
from .postprocess import (MaskResult, cleanup_small_regions, empty_mask_data, filter_masks, suppress_across_crops,
                          suppress_within_crop)
from ..normalize import intensity_range
from .settings import AutomaticSettings

__all__ = ["Cancelled", "Progress", "Cancel", "check_cancel", "model_session", "decode_points", "count_batches",
           "generate_masks"]

#: progress(done, total): called with (0, total) first, then after every decoder batch
Progress = Callable[[int, int], None]
#: cancel(): True means stop; a ``threading.Event`` works too
Cancel = Callable[[], bool]


class Cancelled(RuntimeError):
    """Raised by segment everything when the ``cancel`` callback (or Event) says stop."""


def check_cancel(cancel: Cancel | None) -> None:
    """Raise :class:`Cancelled` if ``cancel`` (a callable or a ``threading.Event``) says stop."""
    if cancel is None:
        return
    stop = cancel.is_set() if hasattr(cancel, "is_set") else cancel()
    if stop:
        raise Cancelled("segment everything was cancelled")


@contextlib.contextmanager
def model_session(predictor, precision: str | None = None) -> Iterator[str]:
    """Hold the predictor for one image: its lock, no autograd, and every model call in ``precision``.

    ``precision``: one of ``napari_granseg.devices.PRECISIONS``; None = the predictor's own setting. The
    predictor's lock (a re-entrant lock, when it has one) keeps a widget worker and the console from
    interleaving ``set_image`` and decoding on the same predictor. An explicit precision also becomes the
    predictor's for the duration (restored afterwards, still under the lock), so the image encoder, which the
    predictor runs in its own precision, follows it too. Yields the precision in use.
    """
    own = predictor.precision  # engine.protocols.Predictor: precision and lock
    chosen = check_precision(own if precision is None else precision)
    swap = chosen != own
    with predictor.lock:
        if swap:
            predictor.precision = chosen
        try:
            with torch.no_grad(), precision_context(predictor.device, chosen):
                yield chosen
        finally:
            if swap:
                predictor.precision = own


def _decode(predictor, coords, labels, mask_input, g_values, multimask: bool):
    """One batched decoder pass: (B, C, h, w) low-res logits and (B, C) predicted IoU."""
    return predictor._decode(coords, labels, None, mask_input, g_values, multimask, coords.shape[0])


def decode_points(predictor, points: np.ndarray, crop_hw: tuple[int, int], g_values, s: AutomaticSettings,
                  cancel: Cancel | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode one batch of grid clicks: low-res logits (N, h, w), predicted IoU (N,), click (N, 2) per mask.

    With ``use_m2m`` every mask is decoded a second time with its own clamped logits as mask input, in
    batches of ``points_per_batch`` as sam2 does (a stock model gives 3 masks per click, so 3 refinement
    batches per click batch); ``cancel`` is checked between those batches.
    """
    device = predictor.device
    pts = torch.as_tensor(points, dtype=torch.float32, device=device)
    in_pts = predictor._transforms.transform_coords(pts, normalize=True, orig_hw=crop_hw)
    in_labels = torch.ones(in_pts.shape[0], dtype=torch.int, device=device)
    low, iou = _decode(predictor, in_pts[:, None, :], in_labels[:, None], None, g_values, s.multimask_output)
    per_point = low.shape[1]
    low, iou = low.flatten(0, 1), iou.flatten(0, 1)
    pts = pts.repeat_interleave(per_point, dim=0)
    if s.use_m2m:
        in_pts = predictor._transforms.transform_coords(pts, normalize=True, orig_hw=crop_hw)
        labels = torch.ones(in_pts.shape[0], dtype=torch.int, device=device)
        new_low, new_iou = [], []
        for p, lab, m in batch_iterator(s.points_per_batch, in_pts, labels, torch.clamp(low, -32.0, 32.0)):
            check_cancel(cancel)
            lo, io = _decode(predictor, p[:, None, :], lab[:, None], m[:, None], g_values, False)
            new_low.append(lo[:, 0])
            new_iou.append(io[:, 0])
        low, iou = torch.cat(new_low), torch.cat(new_iou)
    # the filters compare in float32: a bf16 tensor would round the thresholds themselves to bf16
    return low.float(), iou.float(), pts


def count_batches(image_hw: tuple[int, int], s: AutomaticSettings) -> int:
    """Decoder batches of click prompts a run on an image of ``image_hw`` makes: the progress total."""
    _, layer_idxs = generate_crop_boxes(image_hw, s.crop_n_layers, s.crop_overlap_ratio)
    grids = s.grids()
    return sum(math.ceil(len(grids[layer]) / s.points_per_batch) for layer in layer_idxs)


def generate_masks(predictor, image: np.ndarray, g_values, s: AutomaticSettings, progress: Progress | None = None,
                   cancel: Cancel | None = None, intensity: tuple[float, float] | None = None) -> MaskResult:
    """All masks of ``image`` that survive the filters and NMS, as low-res logits (see :class:`MaskResult`).

    ``intensity``: the (low, high) grey range every crop is scaled with (a stack's, for a slice; None: the
    image's own range, computed once for the whole image so all crops are scaled alike).

    Runs the model: call it inside :func:`model_session`. ``progress(done, total)`` is called with
    ``(0, total)`` first and after every click batch, reaching ``(total, total)`` when decoding is over;
    ``cancel`` is checked before every batch (and every M2M refinement batch) and raises :class:`Cancelled`.
    """
    orig_hw = tuple(image.shape[:2])
    if intensity is None and image.dtype != np.uint8:
        intensity = intensity_range(image, predictor.percentiles)
    crop_boxes, layer_idxs = generate_crop_boxes(orig_hw, s.crop_n_layers, s.crop_overlap_ratio)
    grids = s.grids()
    total = count_batches(orig_hw, s)
    done = 0
    if progress is not None:
        progress(0, total)
    data = MaskData()
    crop_hws = []
    for ci, (crop_box, layer) in enumerate(zip(crop_boxes, layer_idxs)):
        check_cancel(cancel)
        x0, y0, x1, y1 = crop_box
        cropped = image[y0:y1, x0:x1]
        crop_hw = tuple(cropped.shape[:2])
        crop_hws.append(crop_hw)
        predictor.set_image(cropped, intensity=intensity)  # cache hit for an image seen before (e.g. another g)
        points = grids[layer] * np.array(crop_hw)[None, ::-1]
        crop_data = MaskData()
        for (batch,) in batch_iterator(s.points_per_batch, points):
            check_cancel(cancel)
            low, iou, pts = decode_points(predictor, batch, crop_hw, g_values, s, cancel)
            crop_data.cat(filter_masks(low, iou, pts, crop_hw, crop_box, orig_hw, s))
            done += 1
            if progress is not None:
                progress(done, total)
        if len(crop_data.items()) == 0:
            continue
        data.cat(suppress_within_crop(crop_data, crop_box, ci, s.box_nms_thresh))
    if len(data.items()) == 0:
        data = empty_mask_data()
    elif len(crop_boxes) > 1:
        data = suppress_across_crops(data, s.crop_nms_thresh)
    result = MaskResult(data, crop_boxes, crop_hws, orig_hw, s.mask_threshold)
    if s.min_mask_region_area > 0 and len(result):
        result = cleanup_small_regions(result, s.min_mask_region_area, s.box_nms_thresh,
                                       cancel=lambda: check_cancel(cancel))
    return result

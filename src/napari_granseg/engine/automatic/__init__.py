"""Whole-image ("segment everything") segmentation at a chosen granularity (napari-free).

The algorithm of Meta's ``SAM2AutomaticMaskGenerator`` and UnSAMv2's fork of it: a grid of single-click
prompts at granularity g, batched decoding, filters on predicted IoU and stability score, box NMS, optional
crops and small-region cleanup. A stock SAM 2 model gives sam2's masks exactly at equal settings
(``tests/automatic/test_generate.py``); the time saved comes from the embedding cache and from never
upsampling masks that are thrown away (``benchmarks/automatic_vs_sam2.py``).

The package in three steps, each in its own module:

- :mod:`.settings`: :class:`AutomaticSettings`, device presets, a model's recommended settings, the g check;
- :mod:`.decoding`: the model calls (lock, precision, batches, progress, cancel);
- :mod:`.postprocess`: filters, NMS, small regions, records and instance labels.

Public entry points: :func:`segment_everything` (labels), :func:`segment_everything_stack` (a z/t stack),
:func:`generate` (sam2-style mask records).
"""
from __future__ import annotations

import numpy as np

from ..normalize import check_image
from .decoding import Cancel, Cancelled, Progress, generate_masks, model_session
from .postprocess import MaskResult, records_to_labels, to_labels, to_records
from .settings import AutomaticSettings, default_thresholds, granularity_values, model_defaults, resolve_settings

__all__ = ["AutomaticSettings", "Cancelled", "generate", "model_defaults", "segment_everything",
           "segment_everything_stack", "records_to_labels", "default_thresholds"]


def _run(predictor, image: np.ndarray, granularity: float | None, settings: AutomaticSettings | None,
         progress: Progress | None, cancel: Cancel | None, precision: str | None, overrides: dict,
         intensity: tuple[float, float] | None = None) -> MaskResult:
    """Check every input, then decode ``image`` holding the predictor (lock, precision) for the whole image."""
    image = check_image(image)
    g_values = granularity_values(predictor, granularity)
    s = resolve_settings(predictor, granularity, settings, overrides)
    with model_session(predictor, precision):
        return generate_masks(predictor, image, g_values, s, progress, cancel, intensity)


def generate(predictor, image: np.ndarray, granularity: float | None = 0.5,
             settings: AutomaticSettings | None = None, progress: Progress | None = None,
             cancel: Cancel | None = None, precision: str | None = None,
             intensity: tuple[float, float] | None = None, **overrides) -> list[dict]:
    """SAM-style mask records of the whole image at ``granularity``.

    predictor: a :class:`~napari_granseg.engine.interactive.GranularityPredictor` (its embedding cache is
    used). granularity: float in [0.1, 1] for UnSAMv2; None for a stock SAM 2 model. settings: an
    :class:`AutomaticSettings` (default: :meth:`AutomaticSettings.for_device` of the predictor's device);
    keyword overrides change single fields. progress(done, total) is called after each decoder batch;
    cancel() returning True (or a set ``threading.Event``) raises :class:`Cancelled` between batches.
    precision: "auto", "fp32" or "bf16" for every model call of this run; None = the predictor's.
    intensity: the (low, high) grey range to scale with (a stack's range for a slice; None: the image's own).

    Returns, as sam2's generator (``output_mode='binary_mask'``), one dict per mask, best predicted IoU
    first: segmentation (H, W) bool, area, bbox (x, y, w, h), predicted_iou, point_coords [[x, y]],
    stability_score, crop_box (x, y, w, h).
    """
    return to_records(_run(predictor, image, granularity, settings, progress, cancel, precision, overrides,
                           intensity))


def segment_everything(predictor, image: np.ndarray, granularity: float | None = 0.5,
                       progress: Progress | None = None, cancel: Cancel | None = None,
                       settings: AutomaticSettings | None = None, return_info: bool = False,
                       precision: str | None = None, intensity: tuple[float, float] | None = None,
                       **overrides):
    """Instance labels (int32, ids 1..n) of everything in ``image`` at ``granularity``.

    Painting order: larger masks first, so a smaller mask lying on a larger one (a nucleus on its cell)
    stays visible and the larger keeps the rest of its pixels; ids follow that order (1 = largest).
    ``overrides``: any :class:`AutomaticSettings` field (e.g. ``points_per_side=32``).
    ``precision``: "auto", "fp32" or "bf16" for every model call; None = the predictor's setting.
    ``intensity``: the (low, high) grey range (a stack's, for a slice); None: the image's own.
    With ``return_info``: also a list of dicts per label id (predicted_iou, stability_score, point_coords,
    area before painting).
    """
    result = _run(predictor, image, granularity, settings, progress, cancel, precision, overrides, intensity)
    labels, info = to_labels(result)
    return (labels, info) if return_info else labels


def segment_everything_stack(predictor, stack: np.ndarray, granularity: float | None = 0.5,
                             progress: Progress | None = None, cancel: Cancel | None = None,
                             settings: AutomaticSettings | None = None, precision: str | None = None,
                             intensity: tuple[float, float] | None = None, out=None, **overrides) -> np.ndarray:
    """:func:`segment_everything` on each slice of a (Z, H, W[, 3]) stack -> (Z, H, W) int32.

    Ids are unique across the whole stack (slice z's ids follow slice z-1's): slices are segmented
    independently, so the same id on two slices would wrongly claim the same object. Use propagation
    (``gs.propagate``) to follow objects through z/t. ``progress(done, total)`` counts decoder batches over
    the whole stack and ends at ``(total, total)``; the predictor is held one slice at a time, so the console
    can use it between slices.

    The stack is read one slice at a time (numpy, dask, zarr or a napari layer's data), all slices scaled
    with the stack's ONE intensity range (``intensity``, default :func:`~..normalize.stack_intensity_range`).
    ``out``: where the labels go, e.g. a zarr array for a stack larger than memory (default: a new array).
    """
    from ..normalize import stack_intensity_range

    if not (hasattr(stack, "shape") and hasattr(stack, "dtype")):
        stack = np.asarray(stack)
    shape = tuple(stack.shape)
    if len(shape) < 3 or (len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4):
        raise ValueError(f"expected a stack of 2D slices (Z, H, W) or (Z, H, W, 3), got shape {shape}; "
                         f"for one image use segment_everything")
    if intensity is None:
        intensity = stack_intensity_range(stack)
    out = np.zeros(shape[:3], np.int32) if out is None else out
    n = shape[0]
    offset = 0
    for z in range(n):
        def slice_progress(done: int, total: int, z: int = z) -> None:
            if progress is not None:
                progress(z * total + done, n * total)

        lab = segment_everything(predictor, np.asarray(stack[z]), granularity, slice_progress, cancel, settings,
                                 precision=precision, intensity=intensity, **overrides)
        out[z] = np.where(lab > 0, lab + offset, 0)
        offset += int(lab.max())
    return out

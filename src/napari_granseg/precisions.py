"""The one precision setting of every engine, the CLI (``--precision``) and the widgets, and its check.

Why a module without imports: the widgets check a precision on napari's GUI thread, where importing torch
(:mod:`napari_granseg.devices`, which applies the setting) would freeze the window; the rule stays one rule.

"fp32": no autocast anywhere: computes what the official code computes (float32 throughout).
"bf16": autocast to bfloat16 for every model call (image encoder, memory path, decoder) where the device
    allows it.
"auto": the bulk of the image encoder in bf16 where bf16 is native (CUDA with bf16, CPUs with AVX512-BF16/AMX);
    the encoder's few border-deciding parts (``devices.ENCODER_EXACT_PARTS``) and every other stage in float32.
    Why: the encoder's matmuls are nearly all of the time and bf16 cuts it; the parts that write the stride-4
    features and the residual stream, the prompt encoder, mask decoder and memory path cost little and decide
    where the mask border falls, so keeping them in float32 keeps the masks within IoU 0.99 of fp32's
    (docs/precision.md has the measured table).
"""
from __future__ import annotations

__all__ = ["PRECISIONS", "check_precision"]

PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> str:
    """Return ``precision`` if it is one of :data:`PRECISIONS`, else raise a ValueError saying what to pass."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}: 'fp32' reproduces the official "
                         f"code exactly, 'bf16' is faster on GPUs, 'auto' picks bf16 only where it is faster.")
    return precision

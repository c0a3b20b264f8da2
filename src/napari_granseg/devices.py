"""Device and precision policy: CUDA first, then Apple MPS, then CPU.

Why a module of its own: every engine must make the same choice, and users override it in one place
(``device=`` arguments or the ``GRANSEG_DEVICE`` environment variable).
"""
from __future__ import annotations

import os

import torch

from .precisions import PRECISIONS, check_precision

__all__ = ["resolve_device", "bf16_supported_on_cpu", "PRECISIONS", "STAGES", "ENCODER_EXACT_PARTS",
           "check_precision", "autocast_dtype", "precision_context", "encoder_policy"]

#: PRECISIONS and check_precision live in :mod:`napari_granseg.precisions` (torch-free: the widgets share the
#: rule); what each value runs where is applied here.
#: The parts of a model call the policy tells apart: "encoder" (the image encoder, but its exact parts),
#: "encoder_exact" (the :data:`ENCODER_EXACT_PARTS` of the image encoder) and "heads" (prompt encoder, mask
#: decoder, memory encoder and memory attention).
STAGES = ("encoder", "encoder_exact", "heads")
#: The image-encoder parts of the "encoder_exact" stage (``models.encoder_precision`` maps them to SAM 2's
#: modules). Measured one by one against fp32 (docs/precision.md): the masks' borders follow the stride-4
#: features, which pass through the patch embedding, the first Hiera stage, the FPN neck and the decoder's
#: high-res 1x1 convolutions; and bf16 rounding of the linears that write the residual stream (each
#: attention's output projection, the channel projection at each stage change) is most of the error of the
#: final feature map. Together these are under a tenth of the encoder's multiply-adds.
ENCODER_EXACT_PARTS = ("patch_embed", "first_stage", "residual_projections", "fpn_neck", "high_res_convs")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``/``None``/a name into a usable ``torch.device``.

    ``auto`` picks cuda, then mps, then cpu; ``GRANSEG_DEVICE`` overrides ``auto``. Asking for a device
    that is not there raises with the devices that are.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        device = os.environ.get("GRANSEG_DEVICE", "auto")
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {device!r} is not a device name: give auto, cpu, cuda, cuda:N or mps") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} is not supported: give auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but CUDA is not available here; "
                           f"use device='auto' or 'cpu'.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"device {device!r} was asked for but Apple MPS is not available; use 'auto' or 'cpu'.")
    return dev


def bf16_supported_on_cpu() -> bool:
    """True when this CPU has native bfloat16 matmuls (AVX512-BF16/AMX), where CPU autocast pays off."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def autocast_dtype(device: torch.device | str, precision: str = "auto", stage: str = "encoder") -> torch.dtype | None:
    """The autocast dtype ``precision`` means on ``device`` for ``stage`` (None: float32, no autocast)."""
    check_precision(precision)
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r} is not one of {STAGES}")
    device = torch.device(device)
    if precision == "fp32" or (precision == "auto" and stage != "encoder"):
        return None
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("precision='bf16' was asked for, but this GPU has no bfloat16; use 'fp32' or 'auto'.")
        if device.type == "mps":
            raise ValueError("precision='bf16' is not supported on Apple MPS here; use 'fp32' or 'auto'.")
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if bf16_supported_on_cpu() else None
    return None


def precision_context(device: torch.device | str, precision: str = "auto", stage: str = "heads"):
    """The context a model call of an engine runs in: ``stage`` "encoder" for the image encoder, "heads" for
    everything else (see :data:`PRECISIONS` for what "auto" runs where).

    "fp32" returns ``torch.autocast(..., enabled=False)``, not a null context, so that even an autocast opened
    by the caller (a notebook, a trainer) cannot make the engine drift from the official float32 outputs.
    """
    device = torch.device(device)
    dtype = autocast_dtype(device, precision, stage)
    device_type = device.type if device.type in ("cuda", "cpu", "mps") else "cpu"
    if dtype is None:
        return torch.autocast(device_type=device_type, enabled=False)
    return torch.autocast(device_type=device_type, dtype=dtype)


def encoder_policy(device: torch.device | str, precision: str = "auto",
                   exact_parts: tuple[str, ...] = ENCODER_EXACT_PARTS) -> str:
    """What the image encoder computes in under ``precision`` on ``device``, as a short text.

    Embedding caches put it in their keys, so features computed under one policy (e.g. "auto" with its
    float32 parts) are never served to another (e.g. "bf16"), even where both run the bulk in bfloat16.
    """
    bulk = autocast_dtype(device, precision, "encoder")
    exact = autocast_dtype(device, precision, "encoder_exact")
    if bulk == exact or not exact_parts:
        return str(bulk or torch.float32)
    return f"{bulk or torch.float32}+{exact or torch.float32}:{','.join(exact_parts)}"

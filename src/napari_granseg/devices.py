"""Device and precision policy: CUDA first, then Apple MPS, then CPU.

Why a module of its own: every engine must make the same choice, and users override it in one place
(``device=`` arguments or the ``GRANSEG_DEVICE`` environment variable).
"""
from __future__ import annotations

import os

import torch

from .precisions import PRECISIONS, check_precision

__all__ = ["resolve_device", "bf16_supported_on_cpu", "PRECISIONS", "STAGES", "check_precision",
           "autocast_dtype", "precision_context"]

#: PRECISIONS and check_precision: :mod:`napari_granseg.precisions` (torch-free, so the widgets share the rule)
#: The parts of a model call the policy tells apart: "encoder" (the image encoder) and "heads" (prompt
#: encoder, mask decoder, memory encoder and memory attention).
STAGES = ("encoder", "heads")


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

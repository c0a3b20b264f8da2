"""Device and precision policy: CUDA first, then Apple MPS, then CPU.

Why a module of its own: every engine must make the same choice, and users override it in one place
(``device=`` arguments or the ``GRANSEG_DEVICE`` environment variable).
"""
from __future__ import annotations

import contextlib
import os

import torch

__all__ = ["resolve_device", "autocast_for", "bf16_supported_on_cpu"]


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
    dev = torch.device(device)
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


def autocast_for(device: torch.device, enabled: bool | None = None):
    """The autocast context used for the image encoder.

    CUDA: bfloat16 when supported (as upstream training/inference). CPU: bfloat16 only on CPUs with native
    bf16 (measured here: tiny's set_image 2.7 s -> 1.8 s); elsewhere bf16 emulation is slower, so off.
    MPS: off (autocast coverage there is partial). ``enabled`` forces the choice.
    """
    if enabled is None:
        if device.type == "cuda":
            enabled = torch.cuda.is_bf16_supported()
        elif device.type == "cpu":
            enabled = bf16_supported_on_cpu()
        else:
            enabled = False
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

"""From checkpoint files to models: the only place that reads weights from disk.

Why separate from :mod:`napari_granseg.models`: the models take state dicts and know nothing of files; this
module reads files safely (:func:`napari_granseg.checkpoints.read_state_dict`: no pickled code, HTML pages and
non-finite weights refused), loads them through the models' state-dict functions, and, when the tensors do not
fit the config, names the config that does (read from the tensor shapes).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch

from .checkpoints import CheckpointError, check_keys, check_shapes, config_hint, read_state_dict

__all__ = ["load_unsamv2_checkpoint", "load_sam2_checkpoint", "load_sansa", "build_model"]


@contextlib.contextmanager
def _explain_config(state: Mapping[str, torch.Tensor], config: str | Path | None) -> Iterator[None]:
    """Add which config fits ``state`` to a :class:`CheckpointError` raised inside the block."""
    try:
        yield
    except CheckpointError as err:
        hint = config_hint(state, config)
        if not hint:
            raise
        raise CheckpointError(f"{err}\n{hint}") from err


def load_unsamv2_checkpoint(model: torch.nn.Module, path: str | Path, config: str | Path | None = None) -> list[str]:
    """Read ``path`` safely and load it into an UnSAMv2 model; returns the tolerated leftover keys."""
    from .models.unsamv2 import load_unsamv2_state_dict

    state = read_state_dict(path, "UnSAMv2 checkpoint")
    with _explain_config(state, config):
        return load_unsamv2_state_dict(model, state, source=str(path))


def load_sam2_checkpoint(model: torch.nn.Module, path: str | Path, config: str | Path | None = None) -> None:
    """Read ``path`` safely and load it into a plain SAM 2 model (every key must match)."""
    state = read_state_dict(path, "SAM 2 checkpoint")
    with _explain_config(state, config):
        check_shapes(model.state_dict(), state, path, "sam2")
        missing, unexpected = model.load_state_dict(state, strict=False)
        hint = ("This looks like an UnSAMv2 checkpoint: load it with kind='unsamv2'."
                if any("gra_token" in k or "fourier_embedder" in k for k in unexpected) else "")
        check_keys(missing, unexpected, path, "sam2", hint=hint)


def load_sansa(config: str = "configs/sam2/sam2_hiera_l.yaml", base_checkpoint: str | Path | None = None,
               adapter_checkpoint: str | Path | None = None, channel_factor: float | None = None,
               device: str | torch.device = "cpu", overrides: Sequence[str] = ()) -> torch.nn.Module:
    """Build SANSA from files: the SAM 2.0 base checkpoint, then the adapter checkpoint.

    The file-reading counterpart of :func:`napari_granseg.models.sansa.build_sansa_model` (same arguments,
    paths instead of state dicts); ``None`` leaves the base random / the adapters at their initial values.
    """
    from .models.sansa import build_sansa_model

    base = read_state_dict(base_checkpoint, "SAM 2 base checkpoint") if base_checkpoint is not None else None
    adapters = read_state_dict(adapter_checkpoint, "SANSA adapter checkpoint") if adapter_checkpoint is not None else None
    with _explain_config(base if base is not None else (adapters or {}), config):
        return build_sansa_model(config, base_state=base, adapter_state=adapters, channel_factor=channel_factor,
                                 device=device, overrides=overrides,
                                 base_source=str(base_checkpoint), adapter_source=str(adapter_checkpoint))


def build_model(kind: str, config: str, checkpoint: Path | None = None, base_checkpoint: Path | None = None,
                overrides: Sequence[str] = ()) -> torch.nn.Module:
    """A model of ``kind`` on the CPU, built from ``config`` with the weights of ``checkpoint`` (random
    when None); SANSA also takes its SAM 2 base checkpoint."""
    if kind == "sansa":
        return load_sansa(config, base_checkpoint=base_checkpoint, adapter_checkpoint=checkpoint,
                          device="cpu", overrides=overrides)
    if kind == "unsamv2":
        from .models.unsamv2 import build_unsamv2

        model = build_unsamv2(config, overrides=overrides, device="cpu")
        if checkpoint is not None:
            load_unsamv2_checkpoint(model, checkpoint, config)
        return model
    if kind == "sam2":
        from sam2.sam2_video_predictor import SAM2VideoPredictor

        from .models.builder import build_sam2_base

        model = build_sam2_base(config, overrides, target=SAM2VideoPredictor)
        if checkpoint is not None:
            load_sam2_checkpoint(model, checkpoint, config)
        return model
    raise ValueError(f"unknown model kind {kind!r}; use 'unsamv2', 'sam2' or 'sansa'")

"""Reading checkpoint files safely and explaining what is wrong with them.

Checkpoints are untrusted files: they are read with ``torch.load(..., weights_only=True)`` (no pickled code
runs) or with safetensors. Every failure names the file and says what to do: a truncated download, a file
of another model, keys that do not match.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterable, Mapping

import torch

__all__ = ["CheckpointError", "read_state_dict", "check_keys", "save_checkpoint"]


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used, with the reason and the fix in the message."""


def read_state_dict(path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Load a state dict from ``path`` without executing code.

    Accepts ``{"model": state_dict, ...}`` (SAM 2, UnSAMv2, SANSA layouts), a bare state dict, or a
    ``.safetensors`` file. A ``module.`` prefix (DistributedDataParallel) is stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise CheckpointError(f"{path} is a safetensors file: pip install safetensors") from err
        state = load_file(str(path))
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except (zipfile.BadZipFile, EOFError, RuntimeError, OSError) as err:
            size = path.stat().st_size
            raise CheckpointError(
                f"{what} {path} ({size} bytes) cannot be read: the file is truncated or corrupt "
                f"(an interrupted download?). Delete it and download it again. ({err})"
            ) from err
        except Exception as err:  # pickle.UnpicklingError for non-tensor payloads
            raise CheckpointError(
                f"{what} {path} is not a plain tensor checkpoint (refused by torch.load(weights_only=True)); "
                f"only state-dict files are accepted. ({err})"
            ) from err
        state = obj.get("model", obj) if isinstance(obj, Mapping) else None
        if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
            raise CheckpointError(f"{what} {path} does not hold a state dict (expected {{'model': {{name: tensor}}}}).")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def check_keys(missing: Iterable[str], unexpected: Iterable[str], path: str | Path, model_name: str,
               hint: str = "") -> None:
    """Raise :class:`CheckpointError` listing missing/unexpected keys (first 10 of each)."""
    missing, unexpected = sorted(missing), sorted(unexpected)
    if not missing and not unexpected:
        return
    lines = [f"checkpoint {path} does not match model {model_name!r}:"]
    if missing:
        lines.append(f"  {len(missing)} missing keys, e.g. {missing[:10]}")
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected keys, e.g. {unexpected[:10]}")
    lines.append(hint or "Is this the right file and kind/config for it? (kind='unsamv2' needs an UnSAMv2 "
                         "checkpoint with its SAM 2 config; kind='sansa' an adapter checkpoint.)")
    raise CheckpointError("\n".join(lines))


def save_checkpoint(state_dict: Mapping[str, torch.Tensor], path: str | Path, **extra) -> Path:
    """Save ``{"model": state_dict, **extra}`` atomically (the layout upstream loaders expect)."""
    from .io import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"model": dict(state_dict), **extra}, tmp)
    return Path(path)

"""Reading checkpoint files safely and explaining what is wrong with them.

Checkpoints are untrusted files: they are read with ``torch.load(..., weights_only=True)`` (no pickled code
runs) or with safetensors. Every failure names the file and says what to do: a web page saved in place of
the file, a truncated download, non-finite weights, a file of another model, the right file with the wrong
config (the config that fits is read from the tensor shapes where possible).
"""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

import torch

__all__ = ["CheckpointError", "read_state_dict", "check_keys", "check_shapes", "check_finite",
           "save_checkpoint", "sniff_format", "html_page_message", "infer_config", "config_hint",
           "MODEL_RECORD_KEY", "checkpoint_record"]

#: Key of the JSON record a checkpoint written by this plugin carries next to "model" (kind, config, writer).
MODEL_RECORD_KEY = "granseg_model"


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used, with the reason and the fix in the message."""


def sniff_format(head: bytes) -> str:
    """What the first bytes of a file say it is: ``"torch-zip"``, ``"torch-legacy"``, ``"safetensors"``,
    ``"html"`` or ``"unknown"``.

    Why: a hub's error or consent page saved under a checkpoint's name must be recognised as such before
    torch reports it as a pickle problem; downloads check the same bytes before a file enters the cache.
    """
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"  # torch.save's default zip container
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch-legacy"  # pickle protocol 2+: torch's legacy (_use_new_zipfile_serialization=False)
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "safetensors"  # 8-byte header length, then a JSON header
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body", b"<!--")) or b"<html" in text[:4096]:
        return "html"
    return "unknown"


def html_page_message(path: str | Path, what: str = "checkpoint", url: str | None = None) -> str:
    """The message for a web page found where a checkpoint should be: what it is and how to fix it."""
    where = f" from {url}" if url else ""
    return (f"{what} {path} is a web page (HTML), not a checkpoint: a download{where} returned an error, "
            f"sign-in or 'confirm download' page instead of the file. Delete {path} and download the file "
            f"again (napari_granseg.load_model(<zoo name>) does this), or download it by hand in a browser and "
            f"put it at that path.")


def _read_head(path: Path, n: int = 4096) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def read_state_dict(path: str | Path, what: str = "checkpoint", require_finite: bool = True
                    ) -> dict[str, torch.Tensor]:
    """Load a state dict from ``path`` without executing code.

    Accepts ``{"model": state_dict, ...}`` (SAM 2, UnSAMv2, SANSA layouts), a bare state dict, or a
    ``.safetensors`` file. A ``module.`` prefix (DistributedDataParallel) is stripped. Floating-point tensors
    holding NaN or inf are refused (``require_finite``): such a model loads but gives empty results.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} file not found: {path}")
    kind = sniff_format(_read_head(path))
    if kind == "html":
        raise CheckpointError(html_page_message(path, what))
    if path.suffix == ".safetensors" or kind == "safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise CheckpointError(f"{path} is a safetensors file: pip install safetensors") from err
        try:
            state = load_file(str(path))
        except Exception as err:  # safetensors raises its own SafetensorError
            raise CheckpointError(f"{what} {path} is not a readable safetensors file (truncated or corrupt?). "
                                  f"Delete it and download it again. ({err})") from err
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
            if kind == "unknown":
                raise CheckpointError(
                    f"{what} {path} is not a checkpoint (its first bytes are neither a torch file nor "
                    f"safetensors). Delete it and download the file again, or by hand.") from err
            raise CheckpointError(
                f"{what} {path} is not a plain tensor checkpoint (refused by torch.load(weights_only=True)): "
                f"it holds Python objects besides tensors, and this tool only runs state-dict files "
                f"(untrusted files could execute code). Save just the state dict "
                f"(torch.save({{'model': model.state_dict()}}, path)).") from err
        state = obj.get("model", obj) if isinstance(obj, Mapping) else None
        if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
            raise CheckpointError(f"{what} {path} does not hold a state dict (expected {{'model': {{name: tensor}}}}).")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if require_finite:
        check_finite(state, path, what)
    return state


def check_finite(state: Mapping[str, torch.Tensor], source: str | Path, what: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming the tensors that hold NaN or inf."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(
            f"{what} {source} holds non-finite weights (NaN or inf) in {len(bad)} tensors, e.g. {bad[:10]}. "
            f"A model with such weights gives empty or meaningless results, so it is refused. The file is "
            f"damaged or came from a diverged training run: download it again, or use an earlier checkpoint.")


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


def check_shapes(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], path: str | Path,
                 model_name: str) -> None:
    """Raise :class:`CheckpointError` when tensors present in both have other shapes.

    Why: ``load_state_dict`` would otherwise end in torch's size-mismatch dump; the usual cause is the right
    file with the wrong config, and the loader adds which config fits (:func:`config_hint`).
    """
    bad = sorted(k for k in state if k in own and tuple(own[k].shape) != tuple(state[k].shape))
    if bad:
        examples = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in bad[:5]]
        raise CheckpointError(
            f"checkpoint {path} does not fit the {model_name!r} model built from this config: {len(bad)} tensors "
            f"have other shapes, e.g. {examples}. The config does not match the checkpoint.")


#: (trunk embed dim, number of Hiera blocks) -> size name in sam2's config file names.
_HIERA_SIZES = {(96, 12): "t", (96, 16): "s", (112, 24): "b+", (144, 48): "l"}
_SIZE_WORDS = {"t": "Tiny", "s": "Small", "b+": "Base+", "l": "Large"}
_TINY_PLUGIN = (16, 5)  # this plugin's granseg_tiny.yaml (demo and test models)


def infer_config(state: Mapping[str, torch.Tensor]) -> tuple[str, str] | None:
    """``(config, description)`` of the SAM 2 config whose model has these tensor shapes, or None.

    Read from the image encoder trunk (``pos_embed`` channels = embed dim; number of blocks) and, for the
    SAM 2 version, from keys only SAM 2.1 has (``obj_ptr_tpos_proj``, ``no_obj_embed_spatial``). A ``sam.``
    prefix (SANSA files) is ignored.
    """
    keys = {k[len("sam."):] if k.startswith("sam.") else k: v for k, v in state.items()}
    pos = keys.get("image_encoder.trunk.pos_embed")
    blocks = {int(m.group(1)) for k in keys if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))}
    if pos is None or not blocks or pos.dim() != 4:
        return None
    sig = (int(pos.shape[1]), max(blocks) + 1)
    if sig == _TINY_PLUGIN:
        return "granseg_tiny.yaml", "this plugin's tiny demo/test config"
    size = _HIERA_SIZES.get(sig)
    if size is None:
        return None
    if "obj_ptr_tpos_proj.weight" in keys or "no_obj_embed_spatial" in keys:
        return f"configs/sam2.1/sam2.1_hiera_{size}.yaml", f"SAM 2.1 Hiera-{_SIZE_WORDS[size]}"
    return f"configs/sam2/sam2_hiera_{size}.yaml", f"SAM 2.0 Hiera-{_SIZE_WORDS[size]}"


def config_hint(state: Mapping[str, torch.Tensor], config: str | Path | None) -> str:
    """A sentence naming the config that fits ``state`` when it is not ``config``; "" when unknown or same."""
    found = infer_config(state)
    if found is None:
        return ""
    name, description = found
    if config is not None and Path(str(config)).name == Path(name).name and (
            "sam2.1" in str(config)) == ("sam2.1" in name):
        return ""
    return (f"The tensor shapes fit {description}: pass config={name!r}"
            f"{'' if config is None else f' (not {str(config)!r})'}.")


def save_checkpoint(state_dict: Mapping[str, torch.Tensor], path: str | Path, **extra) -> Path:
    """Save ``{"model": state_dict, **extra}`` atomically (the layout upstream loaders expect)."""
    from .io import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"model": dict(state_dict), **extra}, tmp)
    return Path(path)


def checkpoint_record(path: str | Path) -> dict:
    """The record (:data:`MODEL_RECORD_KEY`) of a checkpoint this plugin wrote, else ``{}``; reads no weights.

    Why: ``load_model(path)`` takes the model kind and config from it, and fine-tuning replaces only files
    that carry it. Memory-mapped, so a large file costs almost nothing to ask.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if sniff_format(f.read(8)) != "torch-zip":
                return {}
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        record = json.loads(obj.get(MODEL_RECORD_KEY, "{}")) if isinstance(obj, Mapping) else {}
        return record if isinstance(record, dict) else {}
    except Exception:  # unreadable files are reported by read_state_dict when they are loaded
        return {}

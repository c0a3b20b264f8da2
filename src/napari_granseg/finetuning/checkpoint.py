"""Fine-tuned checkpoints: UnSAMv2's released layout (LoRA unmerged, ``{"model": state_dict}``) plus a record
saying this tool wrote the file, the model kind and config, and the run's scores.

Why the record: an existing ``out`` file is replaced only when it carries it (a person's own file is never
overwritten), and ``load_model(path)`` reads the kind and config from it (no ``kind=``/``config=`` needed).
The model handed back after training is rebuilt from the very state dict that is saved, through the loader's
own functions, so it computes exactly what ``load_model(out)`` will.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch

from ..checkpoints import MODEL_RECORD_KEY, checkpoint_record, save_checkpoint
from ..models.loaded import LoadedModel

__all__ = ["check_out_path", "write_finetuned", "state_to_model", "written_by_us"]

_WRITER = "napari-granseg finetune"


def written_by_us(path: str | Path) -> bool:
    """Whether ``path`` is a checkpoint this tool's fine-tuning wrote."""
    return checkpoint_record(path).get("writer") == _WRITER


def check_out_path(out: str | Path) -> Path:
    """Refuse, before any work, an ``out`` that is a folder or a file this tool did not write."""
    path = Path(out).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"out={str(out)!r} is a folder: give a file name, e.g. {path / 'finetuned.pt'}")
    if path.exists() and not written_by_us(path):
        raise FileExistsError(f"{path} exists and was not written by napari-granseg's fine-tuning: it is not "
                              f"replaced. Choose another file name, or move that file away.")
    return path


def write_finetuned(state: Mapping[str, torch.Tensor], out: str | Path, model: LoadedModel, record: dict) -> Path:
    """Write ``state`` atomically to ``out`` (checked again just before: a file created meanwhile is kept).

    The record keeps what ``load_model`` needs to hand back the same LoadedModel as ``model``: kind, config,
    segment-everything defaults, and whether its base was the demo model (UIs keep saying so)."""
    path = check_out_path(out)
    meta = {"writer": _WRITER, "kind": model.kind, "config": str(model.config), "is_demo": bool(model.is_demo),
            "automatic_defaults": dict(model.automatic_defaults), "finetune": record}
    return save_checkpoint(state, path, **{MODEL_RECORD_KEY: json.dumps(meta)})


def state_to_model(state: Mapping[str, torch.Tensor], base: LoadedModel, name: str) -> LoadedModel:
    """The inference model for ``state`` (LoRA merged), built as ``load_model`` builds it from the file."""
    from ..models.unsamv2 import build_unsamv2, load_unsamv2_state_dict

    module = build_unsamv2(base.config, device="cpu")
    load_unsamv2_state_dict(module, dict(state), source=f"fine-tuned {name}")
    module = module.to(base.device).eval()
    return LoadedModel(kind="unsamv2", name=name, module=module, device=base.device, config=base.config,
                       is_demo=base.is_demo, automatic_defaults=dict(base.automatic_defaults), info={"base": base.name})

"""The JSON record written next to a rebuilt demo model: how it was made (command, seed, machine, time, loss)
and how well it does; shared by ``granseg-train demo`` and ``granseg-train sansa-demo``."""
from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from napari_granseg.io import atomic_write_bytes

__all__ = ["mean_of", "provenance", "write_record"]


def mean_of(history: list[dict], key: str, sl: slice) -> float:
    """Mean of ``key`` over a slice of the per-step training records (NaN when the slice is empty)."""
    vals = [r[key] for r in history[sl]]
    return float(np.mean(vals)) if vals else float("nan")


def provenance(name: str, cfg: Any, seed: int, device: torch.device, train_seconds: float,
               command: Sequence[str] | None, default_command: str) -> dict:
    """The reproducibility fields of a demo record."""
    return {
        "model": name, "config": cfg.model_config, "storage_dtype": "float32",
        "command": " ".join(command) if command else default_command,
        "steps": cfg.steps, "seed": seed, "device": str(device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "train_seconds": round(train_seconds, 1),
    }


def write_record(checkpoint: Path, meta: dict, cfg: Any) -> dict:
    """Add the checkpoint's sha256 and the training config, write ``<checkpoint>.json`` atomically, return it."""
    meta = {**meta, "sha256": hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest(),
            "train_config": cfg.to_dict() | {"out_dir": "<temporary>"}}
    atomic_write_bytes(Path(checkpoint).with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode())
    return meta

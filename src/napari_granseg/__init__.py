"""napari-granseg: segment anything at any granularity (UnSAMv2) and few-shot series segmentation (SANSA).

Three-line use (see docs/scripting.md)::

    import napari_granseg as gs
    labels = gs.segment(image, points=[(row, col)], granularity=0.3)
    labels = gs.segment_everything(image, granularity=0.5)
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "napari_granseg.zoo",
    "list_models": "napari_granseg.zoo",
    "ZOO": "napari_granseg.zoo",
    "LoadedModel": "napari_granseg.models.loaded",
    "GranularityPredictor": "napari_granseg.engine.interactive",
    "segment": "napari_granseg.api",
    "segment_everything": "napari_granseg.api",
    "get_predictor": "napari_granseg.api",
    "release_models": "napari_granseg.api",
    "propagate": "napari_granseg.engine.propagate",
    "ObjectPrompt": "napari_granseg.engine.propagate",
    "PromptError": "napari_granseg.engine.prompts",
    "PRECISIONS": "napari_granseg.devices",
    "FewShotSegmenter": "napari_granseg.engine.fewshot",
    "CheckpointError": "napari_granseg.checkpoints",
    "ModelDownloadError": "napari_granseg.zoo",
    "run_folder": "napari_granseg.batch",
    "run_stack": "napari_granseg.batch",
    "Job": "napari_granseg.batch",
    "ModelRef": "napari_granseg.batch",
    "ImagePlan": "napari_granseg.engine.source",
    "open_predictor": "napari_granseg.compute",
    "open_fewshot": "napari_granseg.compute",
    "Local": "napari_granseg.compute",
    "finetune": "napari_granseg.finetuning.run",
}
#: submodules reachable as attributes without an import (``gs.compute.open_predictor(...)``)
_SUBMODULES = ("compute", "remote")

__all__ = sorted(_LAZY) + list(_SUBMODULES)


def __getattr__(name: str) -> Any:
    """Import on first use, so ``import napari_granseg`` (and napari's plugin discovery) stays fast."""
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return import_module(f"napari_granseg.{name}")
    raise AttributeError(f"module 'napari_granseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY) + list(_SUBMODULES))

"""The handle ``load_model`` returns: the network plus what the engines need to know about it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["LoadedModel"]


@dataclass
class LoadedModel:
    """A model ready for an engine.

    kind: "unsamv2" | "sam2" | "sansa". ``module``: the nn.Module (a ``SAM2Base`` subclass for unsamv2/sam2,
    a ``SansaModel`` for sansa). ``is_demo``: the bundled demo model (say so in every UI that shows results).
    ``automatic_defaults``: segment-everything settings recommended for this model (e.g. the demo's stricter
    stability filter, which its own training record states); explicit user settings always win.
    """

    kind: str
    name: str
    module: torch.nn.Module
    device: torch.device
    config: str
    checkpoint: Path | None = None
    is_demo: bool = False
    info: dict = field(default_factory=dict)
    automatic_defaults: dict = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        sam = getattr(self.module, "sam", self.module)
        return int(sam.image_size)

    def __repr__(self) -> str:  # short, for the napari console
        demo = " [demo]" if self.is_demo else ""
        return f"LoadedModel({self.kind}:{self.name}{demo} on {self.device}, config={self.config})"

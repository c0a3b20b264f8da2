"""What a batch run does: the model reference, the job, its fingerprint, and the few-shot reference pairs.

A :class:`Job` is small and picklable because it is sent to every worker process; the model travels as a
:class:`ModelRef` (name or path), never as weights. The fingerprint is a hash of everything that decides an
item's result, so a rerun knows which outputs are finished and a changed job recomputes them.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..engine.prompts import one_granularity
from ..engine.tiling import SCALES, check_scale, check_tile
from ..model_store import ModelRef
from ..precisions import check_precision
from .inputs import expand_inputs, file_stamp

__all__ = ["MODES", "SCALES", "FORMAT_VERSION", "ModelRef", "Job", "fingerprint", "reference_pairs", "jsonable"]

MODES = ("whole", "prompts", "fewshot")
#: Bumped when the meaning of a fingerprint changes, so older outputs are recomputed instead of trusted.
FORMAT_VERSION = 3


@dataclass
class Job:
    """What to do to every item. Small and picklable: it is sent to every worker.

    mode: "whole" (instance labels of the whole image at ``granularity``, :func:`gs.segment_everything`),
    "prompts" (objects from a prompt file, see :func:`napari_granseg.batch.read_prompts`) or "fewshot"
    (classes from reference images + label images).
    settings: extra keyword arguments of the whole-image engine (e.g. ``points_per_side``).
    precision: "auto" (fast path where measured faster), "fp32" (exactly the official computation) or
    "bf16"; part of the fingerprint, because it changes the result.
    overwrite: recompute outputs this tool wrote before (never touches files it did not write).
    replace_foreign: glob patterns (matched against an output's path and its file name) naming files NOT
    written by this tool that may nevertheless be replaced; empty: such files are refused and kept.
    torch_threads: torch threads per worker process (distributed runs; None: cores / workers).
    scale / tile: how images larger than the model's input are seen ("auto" | "tile" | "downscale"; tile
    size in pixels, None: the model's input size), as ``gs.segment(scale=, tile=)``; not used by few-shot.
    channels / channel_axis: for multi-channel images, the channel the model sees (``0``) or a composite of up
    to three (``(0, 2)``), and which axis holds the channels (0 or -1; None: found from the shape).
    """

    mode: str = "whole"
    granularity: float = 0.5
    model: ModelRef = field(default_factory=ModelRef)
    settings: dict[str, Any] = field(default_factory=dict)
    prompts: str | os.PathLike | Mapping[str, Sequence] | None = None
    references: str | os.PathLike | None = None
    reference_labels: str | os.PathLike | None = None
    image_size: int = 640
    precision: str = "auto"
    overwrite: bool = False
    replace_foreign: tuple[str, ...] = ()
    torch_threads: int | None = None
    scale: str = "auto"
    tile: int | None = None
    channels: int | tuple[int, ...] | None = None
    channel_axis: int | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; use one of {MODES}")
        self.granularity = one_granularity(self.granularity, lists="a run writes one label image per input (CLI: "
                                           "run once per value; Python: gs.segment_everything(granularity=[...]))")
        try:  # the engines' rules, before any image is read
            check_precision(self.precision)
        except ValueError as err:
            raise ValueError(f"{err} (CLI: --precision fp32)") from None
        try:  # the engines' rule (gs.segment, the widgets): one check, here before any image is read
            self.scale, self.tile = check_scale(self.scale), check_tile(self.tile)
        except ValueError as err:
            raise ValueError(f"{err} (CLI: --scale tile --tile 1024)") from None
        if isinstance(self.channels, (list, tuple)):
            self.channels = tuple(int(c) for c in self.channels)
            if not 1 <= len(self.channels) <= 3:
                raise ValueError(f"channels={self.channels}: give one channel or up to three for a composite "
                                 f"(CLI: --channels 0 or --channels 0,2)")
        if self.channel_axis not in (None, 0, -1, 2):
            raise ValueError(f"channel_axis={self.channel_axis!r}: the channels are the first (0) or the last (-1) "
                             f"axis (CLI: --channel-axis 0)")
        if self.mode == "whole" and self.settings:
            from ..engine.automatic.settings import validate_overrides

            validate_overrides(self.settings)  # a bad --set value fails here, not once per image
        if isinstance(self.replace_foreign, str):
            self.replace_foreign = (self.replace_foreign,)
        self.replace_foreign = tuple(str(p) for p in self.replace_foreign)
        if self.mode == "prompts" and self.prompts is None:
            raise ValueError("mode 'prompts' needs a prompt file: Job(mode='prompts', prompts='prompts.csv') "
                             "(CLI: --prompts FILE); see docs/batch.md for the format")
        if self.mode == "fewshot" and (self.references is None or self.reference_labels is None):
            raise ValueError("mode 'fewshot' needs references=DIR of images and reference_labels=DIR of label "
                             "images (CLI: --references DIR --reference-labels DIR)")

    def core(self) -> dict[str, Any]:
        """The part of the job that decides the result (for fingerprints; prompts are added per item)."""
        core = {"mode": self.mode, "granularity": round(float(self.granularity), 6),
                "model": list(self.model.key()[:3]), "settings": jsonable(self.settings),
                "precision": self.precision, "v": FORMAT_VERSION,
                "channels": jsonable(self.channels), "channel_axis": self.channel_axis}
        if self.mode != "fewshot":
            core.update(scale=self.scale, tile=self.tile)
        if self.mode == "fewshot":
            core["image_size"] = int(self.image_size)
            core["references"] = [[str(a), str(b), file_stamp(a), file_stamp(b)]
                                  for a, b in reference_pairs(self.references, self.reference_labels)]
        return core

    def engine_options(self) -> dict[str, Any]:
        """Keyword arguments every engine call of this job gets (precision; "auto" is the engines' default)."""
        return {} if self.precision == "auto" else {"precision": self.precision}

    def image_options(self) -> dict[str, Any]:
        """Keyword arguments of ``gs.segment`` / ``gs.segment_everything`` for channels and scale (only those
        set, so the engines' own defaults apply otherwise)."""
        options: dict[str, Any] = {"scale": self.scale} if self.scale != "auto" else {}
        if self.tile is not None:
            options["tile"] = int(self.tile)
        if self.channels is not None:
            options["channels"] = self.channels
        if self.channel_axis is not None:
            options["channel_axis"] = self.channel_axis
        return options

    @property
    def prompts_base(self) -> Path | None:
        """The folder image names in the prompt file are relative to (None: a mapping given in Python)."""
        return Path(self.prompts).parent if isinstance(self.prompts, (str, os.PathLike)) else None

    @property
    def has_channel_choice(self) -> bool:
        return self.channels is not None or self.channel_axis is not None


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON types (what fingerprints and zarr attributes can hold)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def fingerprint(core: Mapping[str, Any], prompts: Sequence = ()) -> str:
    """A short hash of what decides an item's result (job core + the item's prompts)."""
    payload = json.dumps({"job": jsonable(core), "prompts": [asdict(p) for p in prompts]}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


_LABEL_SUFFIXES = ("_labels", "_label", "_mask", "_masks")
_LABEL_FILE_SUFFIXES = (".tif", ".tiff", ".png", ".bmp", ".jpg", ".jpeg")


def label_files_by_stem(lab_dir: Path) -> dict[str, Path]:
    """The label files of a folder by the image stem they belong to: ``cells_000.tif`` and
    ``cells_000_labels.tif`` (or ``_label``, ``_mask``, ``_masks``) both label ``cells_000``."""
    labels: dict[str, Path] = {}
    for p in sorted(lab_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in _LABEL_FILE_SUFFIXES:
            stem = p.stem
            for suffix in _LABEL_SUFFIXES:
                if stem.endswith(suffix):
                    stem = stem[: -len(suffix)]
                    break
            labels.setdefault(stem, p)
    return labels


def reference_pairs(references: str | os.PathLike | None,
                    reference_labels: str | os.PathLike | None) -> list[tuple[Path, Path]]:
    """Pair each reference image with its label image by stem (``a.tif`` <-> ``a.tif``/``a_labels.tif``/``a_mask.png``)."""
    if references is None or reference_labels is None:
        return []
    images = expand_inputs([references])
    lab_dir = Path(reference_labels)
    if not lab_dir.is_dir():
        raise FileNotFoundError(f"reference label folder {lab_dir} not found: pass --reference-labels DIR, the "
                                f"folder of label images named like the reference images")
    labels = label_files_by_stem(lab_dir)
    pairs, missing = [], []
    for img in images:
        if img.stem in labels:
            pairs.append((img, labels[img.stem]))
        else:
            missing.append(img.name)
    if not pairs:
        raise FileNotFoundError(f"no reference image in {references} has a label image in {lab_dir} "
                                f"(name it like the image, or <stem>_labels.tif)")
    if missing:
        raise FileNotFoundError(f"reference images without label images in {lab_dir}: {missing[:10]} "
                                f"(add <stem>_labels.tif for each, or move those images out)")
    return pairs

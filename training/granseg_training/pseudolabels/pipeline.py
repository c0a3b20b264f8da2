"""Divide, conquer, merge and granularity for one image, and a resumable run over a folder of images."""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from napari_granseg.engine.normalize import to_model_rgb

from .coco import is_complete_json, write_image_json
from .conquer import DEFAULT_THRESHOLDS, conquer_instance
from .divide import FolderProposals, ProposalFn, classify_proposals, divide_image
from .features import FeatureExtractor
from .granularity import granularity_by_instance
from .masks import PseudoMask
from .merge import RefineFn, merge_masks

__all__ = ["PseudoLabelConfig", "pseudolabel_image", "run_folder", "RunSummary", "list_images", "read_image",
           "IMAGE_SUFFIXES"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class PseudoLabelConfig:
    """All thresholds of the pseudo-label pipeline; defaults follow UnSAMv2 / MaskCut."""

    max_instances: int = 3                    # MaskCut cuts per image (divide)
    tau: float = 0.2                          # MaskCut affinity threshold
    max_ncut: float | None = None             # stop cutting when the best split is no real split (off: MaskCut)
    divide_long_side: int | None = 480        # image long side for the divide features
    conquer_long_side: int | None = 768       # crop long side for the conquer features (UnSAMv2: 768)
    min_instance_frac: float = 0.05           # instance: area > 5% of the image
    inside: float = 0.8                       # instance not > 80% inside another; part > 80% inside one
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    min_cluster_patches: int = 4
    conquer_inside: float = 0.9
    conquer_nms_iou: float = 0.8
    merge_nms_iou: float = 0.8
    max_area_frac: float = 0.9


def pseudolabel_image(image: np.ndarray, extractor: FeatureExtractor, config: PseudoLabelConfig | None = None,
                      proposals: Sequence[np.ndarray] | ProposalFn | None = None,
                      refine: RefineFn | None = None) -> list[PseudoMask]:
    """Pseudo-labels of one image (any dtype, gray or RGB): masks with granularity, instance first per set.

    ``proposals``: masks or a proposal model replacing MaskCut as the divide stage.
    """
    cfg = config or PseudoLabelConfig()
    rgb = to_model_rgb(image)
    if proposals is None:
        props = divide_image(rgb, extractor, max_instances=cfg.max_instances, long_side=cfg.divide_long_side,
                             tau=cfg.tau, max_ncut=cfg.max_ncut)
    else:
        props = list(proposals(rgb) if callable(proposals) else proposals)
        props = [np.asarray(p, dtype=bool) for p in props]
        for p in props:
            if p.shape != rgb.shape[:2]:
                raise ValueError(f"a proposal has shape {p.shape}, the image {rgb.shape[:2]}.")
    instances, parts = classify_proposals(props, min_instance_frac=cfg.min_instance_frac, inside=cfg.inside)
    masks: list[PseudoMask] = []
    for inst_id, i in enumerate(instances):
        masks.append(PseudoMask(props[i], inst_id, is_part=False, is_divide=True, is_conquer=False))
        masks += [PseudoMask(props[j], inst_id, is_part=True, is_divide=True, is_conquer=False)
                  for j in parts[i]]
        for m in conquer_instance(rgb, props[i], extractor, long_side=cfg.conquer_long_side,
                                  thresholds=cfg.thresholds, min_patches=cfg.min_cluster_patches,
                                  inside=cfg.conquer_inside, nms_iou=cfg.conquer_nms_iou):
            masks.append(PseudoMask(m, inst_id, is_part=True, is_divide=False, is_conquer=True))
    masks = merge_masks(masks, rgb, iou_threshold=cfg.merge_nms_iou, max_area_frac=cfg.max_area_frac,
                        refine=refine)
    g = granularity_by_instance([m.instance_id for m in masks], [m.area for m in masks])
    for m, gi in zip(masks, g):
        m.granularity = float(gi)
    masks.sort(key=lambda m: (m.instance_id, -m.granularity))
    return masks


def read_image(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile
        return tifffile.imread(path)
    from skimage import io as skio
    return skio.imread(path)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Images directly in ``folder`` (sorted); raises when two share a stem (their JSONs would collide)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"images folder {folder} does not exist.")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems:
            raise ValueError(f"{p.name} and {stems[p.stem].name} share the stem {p.stem!r}; their pseudo-label "
                             f"files would collide. Rename one.")
        stems[p.stem] = p
    return paths


@dataclass
class RunSummary:
    processed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    num_masks: int = 0


def run_folder(images_dir: str | os.PathLike, out_dir: str | os.PathLike, extractor: FeatureExtractor,
               config: PseudoLabelConfig | None = None,
               proposals: str | os.PathLike | ProposalFn | None = None, refine: RefineFn | None = None,
               progress: bool = True, stop_on_error: bool = False) -> RunSummary:
    """Write ``OUT_DIR/STEM.json`` for every image; images with a complete JSON already are skipped, so an
    interrupted run resumes where it stopped (a corrupt or partial JSON is redone)."""
    cfg = config or PseudoLabelConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folder_props = FolderProposals(proposals) if isinstance(proposals, (str, os.PathLike)) else None
    summary = RunSummary()
    images = list_images(images_dir)
    if not images:
        log.warning("no images (%s) in %s", ", ".join(IMAGE_SUFFIXES), images_dir)
    bar = tqdm(images, desc="pseudo-labels", unit="img", disable=not progress)
    for path in bar:
        target = out_dir / f"{path.stem}.json"
        if target.exists():
            if is_complete_json(target):
                summary.skipped.append(path.name)
                continue
            log.warning("%s is incomplete or corrupt: redoing %s", target, path.name)
        try:
            image = read_image(path)
            props = folder_props.load(path.stem, image.shape[:2]) if folder_props is not None else proposals
            masks = pseudolabel_image(image, extractor, cfg, proposals=props, refine=refine)
            write_image_json(target, masks, path.name, image.shape[0], image.shape[1],
                             extra_info={"config": _jsonable(asdict(cfg))})
        except Exception as exc:  # one bad image must not stop a long run
            if stop_on_error:
                raise
            log.exception("failed on %s", path)
            summary.failed.append((path.name, f"{type(exc).__name__}: {exc}"))
            continue
        summary.processed.append(path.name)
        summary.num_masks += len(masks)
        bar.set_postfix(masks=len(masks))
    log.info("pseudo-labels: %d done, %d already there, %d failed, %d masks written", len(summary.processed),
             len(summary.skipped), len(summary.failed), summary.num_masks)
    return summary


def _jsonable(d: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

"""Training samples for UnSAMv2: an image plus a list of (mask, granularity).

Two sources: COCO JSON pseudo-labels (RLE masks with a ``granularity`` field per annotation, as written by
``granseg_training.pseudolabels``; decoded by :mod:`granseg_training.rle`) and the plugin's synthetic nested
scenes (cell > nucleus > nucleolus), whose g comes from the pseudo-labels' formula
(:func:`granseg_training.pseudolabels.granularity.granularity_of_areas`) applied within each cell's set.

Every sample is returned at the model's input size: ``image`` (3, S, S) float RGB in [0, 1] (same path as
the predictor: :func:`napari_granseg.engine.normalize.to_model_rgb`, then resize; the trainer applies
SAM 2's ImageNet mean/std after augmentation), ``masks`` (N, S, S) bool, ``granularity`` (N,) float32.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from napari_granseg.engine.normalize import to_model_rgb
from napari_granseg.synthetic import NestedScene, nested_cells_scene

from ..pseudolabels.granularity import G_FALLBACK, granularity_of_areas
from ..rle import decode_segmentation

__all__ = ["granularity_of_areas", "scene_targets", "prepare_sample", "SyntheticNestedDataset",
           "CocoGranularityDataset", "collate_samples"]


def scene_targets(scene: NestedScene) -> tuple[list[np.ndarray], np.ndarray]:
    """All masks of a nested scene with their g, computed per cell over (nucleolus, nucleus, cell)."""
    masks, gs = [], []
    for i in range(len(scene.masks[2])):
        group = [scene.masks[level][i] for level in range(3)]
        gs.extend(granularity_of_areas([m.sum() for m in group]).tolist())
        masks.extend(group)
    return masks, np.asarray(gs, np.float32)


def prepare_sample(image: np.ndarray, masks: Sequence[np.ndarray], granularity: Sequence[float],
                   image_size: int, percentiles=(0.5, 99.5)) -> dict:
    """Normalise and resize one image and its masks to the model input (same steps as the predictor)."""
    rgb = torch.from_numpy(to_model_rgb(image, percentiles)).permute(2, 0, 1)[None]
    rgb = F.interpolate(rgb, size=(image_size, image_size), mode="bilinear", align_corners=False,
                        antialias=rgb.shape[-1] > image_size)[0]
    if len(masks):
        m = torch.from_numpy(np.stack([np.asarray(x, bool) for x in masks])).float()[None]
        m = F.interpolate(m, size=(image_size, image_size), mode="nearest")[0] > 0.5
    else:
        m = torch.zeros((0, image_size, image_size), dtype=torch.bool)
    return {"image": rgb.clamp(0, 1), "masks": m,
            "granularity": torch.as_tensor(np.asarray(granularity, np.float32))}


def _subsample(sample: dict, max_masks: int, rng: np.random.Generator) -> dict:
    keep = sample["masks"].flatten(1).any(1)
    idx = torch.nonzero(keep).flatten().numpy()
    if len(idx) > max_masks:
        idx = np.sort(rng.choice(idx, size=max_masks, replace=False))
    idx_t = torch.as_tensor(idx, dtype=torch.long)
    return {**sample, "masks": sample["masks"][idx_t], "granularity": sample["granularity"][idx_t]}


class SyntheticNestedDataset(Dataset):
    """Nested-cell scenes generated on the fly from ``seed + index`` (deterministic, unlimited variety)."""

    def __init__(self, length: int, image_size: int, scene_size: int = 128, n_cells: int | tuple[int, int] = 2,
                 seed: int = 0, max_masks: int = 30, augment: Callable[[dict, np.random.Generator], dict] | None = None):
        self.length, self.image_size, self.scene_size = length, image_size, scene_size
        self.n_cells = n_cells if isinstance(n_cells, (tuple, list)) else (n_cells, n_cells)
        self.seed, self.max_masks, self.augment = seed, max_masks, augment
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        n = int(rng.integers(self.n_cells[0], self.n_cells[1] + 1))
        scene = nested_cells_scene(size=self.scene_size, n_cells=n, rng=rng)
        masks, gs = scene_targets(scene)
        sample = prepare_sample(scene.image, masks, gs, self.image_size)
        if self.augment is not None:
            sample = self.augment(sample, rng)
        return _subsample(sample, self.max_masks, rng)


def _read_image(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return np.asarray(tifffile.imread(path))
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB") if im.mode not in ("L", "I;16", "I;16B", "I") else im)


class CocoGranularityDataset(Dataset):
    """Images and masks from COCO JSON pseudo-labels (one file with many images, or a folder of files).

    Accepted layouts: the COCO ``{"images": [...], "annotations": [...]}`` and the SA-1B-style
    ``{"image": {...}, "annotations": [...]}``. Each annotation needs ``segmentation`` (RLE, compressed or
    not, or polygons) and ``granularity``; annotations without it get ``G_FALLBACK`` (0.5, as the pseudo-labels).
    Image files are looked up under ``image_root`` (default: the JSON's folder) by ``file_name``.
    """

    def __init__(self, source: str | Path, image_size: int, image_root: str | Path | None = None,
                 max_masks: int = 30, augment: Callable[[dict, np.random.Generator], dict] | None = None,
                 seed: int = 0, min_area: int = 1):
        source = Path(source)
        files = sorted(source.glob("*.json")) if source.is_dir() else [source]
        if not files:
            raise FileNotFoundError(f"no COCO JSON files in {source}: point --coco-json at the pseudo-label "
                                    f"file or folder written by granseg-pseudolabel")
        self.items: list[tuple[Path, dict, list[dict]]] = []
        for f in files:
            data = json.loads(f.read_text())
            root = Path(image_root) if image_root else f.parent
            images = data["images"] if "images" in data else [data["image"]]
            by_id: dict = {}
            for ann in data.get("annotations", []):
                by_id.setdefault(ann.get("image_id", images[0].get("id")), []).append(ann)
            for im in images:
                anns = by_id.get(im.get("id"), [])
                if anns:
                    self.items.append((root / im["file_name"], im, anns))
        if not self.items:
            raise ValueError(f"{source} holds no images with annotations")
        self.image_size, self.max_masks, self.augment = image_size, max_masks, augment
        self.seed, self.min_area, self.epoch = seed, min_area, 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        path, info, anns = self.items[index]
        if not path.is_file():
            raise FileNotFoundError(f"image {path} named in the pseudo-labels is missing: set image_root to "
                                    f"the folder holding the images")
        image = _read_image(path)
        h, w = image.shape[:2]
        masks, gs = [], []
        for ann in anns:
            m = decode_segmentation(ann["segmentation"], int(info.get("height", h)), int(info.get("width", w)))
            if m.shape != (h, w) or m.sum() < self.min_area:
                continue
            masks.append(m)
            gs.append(float(ann.get("granularity", G_FALLBACK)))
        rng = np.random.default_rng([self.seed, self.epoch, index])
        sample = prepare_sample(image, masks, gs, self.image_size)
        if self.augment is not None:
            sample = self.augment(sample, rng)
        return _subsample(sample, self.max_masks, rng)


def collate_samples(batch: list[dict]) -> dict:
    """Stack images; masks and g stay per image (their counts differ)."""
    return {"image": torch.stack([b["image"] for b in batch]), "masks": [b["masks"] for b in batch],
            "granularity": [b["granularity"] for b in batch]}

"""COCO JSON per image, with RLE masks and the UnSAMv2 fields, written atomically.

One file per image (not one big file) so a long run can stop anywhere and resume: a JSON that exists and
parses completely is a finished image. Each annotation carries ``granularity``, ``instance_id``,
``is_part``, ``is_divide`` and ``is_conquer`` next to the usual ``segmentation`` (compressed RLE with
``counts`` as str), ``area``, ``bbox`` (x, y, w, h) and ``iscrowd``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from napari_granseg.io import atomic_path

from ..rle import decode_segmentation, encode_rle, rle_area, rle_bbox
from .masks import PseudoMask

__all__ = ["write_image_json", "read_image_json", "read_pseudolabels", "is_complete_json", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_REQUIRED = ("segmentation", "granularity", "instance_id", "is_part", "is_divide", "is_conquer")


def write_image_json(path: str | os.PathLike, masks: Sequence[PseudoMask], file_name: str,
                     height: int, width: int, image_id: int = 0, extra_info: dict | None = None) -> Path:
    """Write the pseudo-labels of one image as a COCO JSON file (atomically) and return its path."""
    annotations = []
    for k, m in enumerate(masks, start=1):
        if m.mask.shape != (height, width):
            raise ValueError(f"mask {k} has shape {m.mask.shape}, image is {(height, width)}.")
        rle = encode_rle(m.mask)
        annotations.append({
            "id": k, "image_id": image_id, "category_id": 1, "segmentation": rle,
            "area": rle_area(rle),
            "bbox": rle_bbox(rle),
            "iscrowd": 0, "granularity": float(m.granularity), "instance_id": int(m.instance_id),
            "is_part": bool(m.is_part), "is_divide": bool(m.is_divide), "is_conquer": bool(m.is_conquer),
            "score": float(m.score),
        })
    data = {
        "info": {"description": "UnSAMv2-style pseudo-labels (granseg-pseudolabel)", "version": FORMAT_VERSION,
                 "complete": True, **(extra_info or {})},
        "images": [{"id": image_id, "file_name": file_name, "height": int(height), "width": int(width)}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data))
    return path


def read_image_json(path: str | os.PathLike) -> dict:
    """Load and validate one pseudo-label JSON; raises ValueError saying what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not readable JSON ({exc}); delete it and re-run to redo that image.") from exc
    if not isinstance(data, dict) or not data.get("info", {}).get("complete"):
        raise ValueError(f"{path} is not a complete granseg pseudo-label file; delete it and re-run.")
    images, anns = data.get("images"), data.get("annotations")
    if not isinstance(images, list) or len(images) != 1 or not isinstance(anns, list):
        raise ValueError(f"{path} must hold one image and a list of annotations.")
    for a in anns:
        if not isinstance(a, dict) or any(k not in a for k in _REQUIRED):
            raise ValueError(f"{path}: an annotation lacks one of {_REQUIRED}.")
    return data


def is_complete_json(path: str | os.PathLike) -> bool:
    """True when ``path`` exists and is a complete, valid pseudo-label file (used to resume)."""
    try:
        read_image_json(path)
    except (ValueError, FileNotFoundError):
        return False
    return True


def read_pseudolabels(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(masks (N, H, W) bool, granularities (N,) float32) of one image, for training."""
    data = read_image_json(path)
    img = data["images"][0]
    h, w = int(img["height"]), int(img["width"])
    anns = data["annotations"]
    masks = np.zeros((len(anns), h, w), dtype=bool)
    for i, a in enumerate(anns):
        masks[i] = decode_segmentation(a["segmentation"], h, w)
    g = np.array([a["granularity"] for a in anns], dtype=np.float32)
    return masks, g

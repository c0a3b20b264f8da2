"""COCO run-length encoding of masks (pycocotools), in the JSON form: ``{"size": [h, w], "counts": str}``.

pycocotools returns ``counts`` as bytes, which ``json`` cannot write, and wants bytes back; every writer and
reader of masks in the training package goes through these functions so files and evaluations agree.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["encode_rle", "decode_segmentation", "rle_area", "rle_bbox"]


def _mask_utils():
    from pycocotools import mask as mask_utils

    return mask_utils


def _as_bytes(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def encode_rle(mask: np.ndarray) -> dict:
    """(H, W) mask (any dtype, nonzero = inside) -> compressed RLE with ``counts`` as an ASCII str."""
    rle = _mask_utils().encode(np.asfortranarray(np.asarray(mask, dtype=bool).astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_segmentation(seg: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` -> (H, W) bool: compressed RLE (``counts`` str or bytes), uncompressed RLE
    (``counts`` a list) or polygons (a list of coordinate lists, merged)."""
    mask_utils = _mask_utils()
    if isinstance(seg, dict):
        if isinstance(seg.get("counts"), list):  # uncompressed RLE
            return mask_utils.decode(mask_utils.frPyObjects(seg, height, width)).astype(bool)
        return mask_utils.decode(_as_bytes(seg)).astype(bool)
    rles = mask_utils.frPyObjects(seg, height, width)  # polygons
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def rle_area(rle: dict) -> int:
    """Pixels inside a compressed RLE."""
    return int(_mask_utils().area(_as_bytes(rle)))


def rle_bbox(rle: dict) -> list[float]:
    """COCO box ``[x, y, w, h]`` of a compressed RLE."""
    return [float(v) for v in _mask_utils().toBbox(_as_bytes(rle))]

"""Where a widget's large results are written, and the channel box's help text.

Why: microscopy stacks are often larger than memory; a stack's labels above :data:`LARGE_LABELS_BYTES` go to a
zarr array in a folder of their own (:func:`new_labels_array`), written slice by slice. What the model sees of
a layer (level 0, channels, one intensity range) is decided by :class:`napari_granseg.engine.source.ImagePlan`.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["new_labels_array", "LARGE_LABELS_BYTES", "CHANNELS_TIP"]

#: Labels larger than this (int32 bytes) are written to a zarr array on disk instead of memory.
LARGE_LABELS_BYTES = 512 * 2**20

CHANNELS_TIP = ("for a 2-5 channel image, (H, W, C) or (C, H, W): the channel the model sees (e.g. 1), or up to "
                "three for a composite (0, 2 = first into red, second into green); empty for a gray or RGB image")


def new_labels_array(shape: tuple[int, ...], name: str):
    """(a zeroed int32 label array of ``shape``, the folder holding it or None).

    Up to :data:`LARGE_LABELS_BYTES` the array is in memory; above, it is a zarr array chunked one slice per
    chunk in a new temporary folder of its own (``tempfile.mkdtemp``), so a stack's labels are written slice by
    slice and never held whole. The folder is never deleted by the plugin: save the layer, then delete it.
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * 4
    if nbytes <= LARGE_LABELS_BYTES or len(shape) < 3:
        return np.zeros(shape, np.int32), None
    import zarr

    folder = Path(tempfile.mkdtemp(prefix="granseg-labels-"))
    safe = re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_") or "labels"
    arr = zarr.open_array(str(folder / f"{safe}.zarr"), mode="w", shape=tuple(shape),
                          chunks=(1,) + tuple(shape[1:]), dtype="int32", fill_value=0)
    return arr, folder / f"{safe}.zarr"

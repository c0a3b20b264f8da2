"""Writing an object or a propagated stack into a labels array: the rules, and their napari application.

Why a module: this is where the person's data is written. The rules (:func:`object_write`,
:func:`propagation_writes`) are plain numpy, shared by the napari adapter and any other layer port:

- an object is written only on background pixels (never over another label);
- refining an existing label replaces that label's pixels on the slice (what the refined mask drops goes
  back to background), other labels are never overwritten;
- a propagation writes the object on background pixels of every slice but the committed one.

:func:`write_object` and :func:`write_propagation` apply them to a napari ``Labels`` layer (duck-typed: no
napari import) as ONE undo step each (``Labels.block_history``), so Ctrl+Z removes exactly what was written.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .._common import WidgetError

__all__ = ["ObjectWrite", "object_write", "propagation_writes", "write_object", "write_propagation"]


@dataclass(frozen=True)
class ObjectWrite:
    """What committing one mask does to one slice: ``label_id`` on ``write``, 0 on ``drop``."""

    label_id: int
    write: np.ndarray
    drop: np.ndarray
    n_pixels: int       # pixels of the object after the commit (new ones and, when refining, kept ones)


def object_write(region: np.ndarray, mask: np.ndarray, refine_label: int | None, max_label: int,
                 dtype: np.dtype, labels_name: str = "labels", error: type[Exception] = WidgetError) -> ObjectWrite:
    """The pixels a commit of ``mask`` on the slice ``region`` changes (see the module docstring).

    New object: id = ``max_label`` + 1. Raises ``error`` when nothing would be written or the id does not fit.
    """
    region, mask = np.asarray(region), np.asarray(mask, bool)
    if refine_label:
        label_id = int(refine_label)
        allowed = (region == 0) | (region == label_id)
    else:
        label_id = int(max_label) + 1
        allowed = region == 0
        if label_id > np.iinfo(dtype).max:
            raise error(f"labels layer {labels_name!r} ({np.dtype(dtype)}) cannot hold label {label_id}: convert "
                        f"it with layer.data = layer.data.astype('int32')")
    write = mask & allowed
    if not write.any():
        raise error("this object is already labelled (commit writes only on background pixels): click another "
                    "object, or change the granularity")
    drop = (region == label_id) & ~write if refine_label else np.zeros_like(write)
    return ObjectWrite(label_id, write & (region != label_id), drop, int(write.sum()))


def propagation_writes(result, labels_data, label_id: int, committed_slice: int
                       ) -> Iterator[tuple[int, np.ndarray]]:
    """(slice, pixels to set to ``label_id``) for each slice of a propagated ``result`` that gains pixels;
    reads one slice at a time (a dask/zarr labels array is never read whole)."""
    for t in range(int(np.shape(result)[0])):
        if t == committed_slice:
            continue
        write = (np.asarray(result[t]) == label_id) & (np.asarray(labels_data[t]) == 0)
        if write.any():
            yield t, write


def write_object(labels, index: tuple[int, ...], mask: np.ndarray, refine_label: int | None = None,
                 error: type[Exception] = WidgetError) -> tuple[int, int]:
    """Write ``mask`` on slice ``index`` of the Labels layer ``labels`` as one undo step; returns (label id,
    pixels written) (see :func:`object_write`)."""
    data = labels.data
    region = np.asarray(data[index]) if index else np.asarray(data)
    plan = object_write(region, mask, refine_label, int(np.max(data)), data.dtype, labels.name, error)
    with labels.block_history():
        for value, where in ((0, plan.drop), (plan.label_id, plan.write)):
            if where.any():
                rr, cc = np.nonzero(where)
                indices = tuple(np.full(rr.shape, i, np.intp) for i in index) + (rr, cc)
                labels.data_setitem(indices, value)
    labels.selected_label = plan.label_id
    return plan.label_id, plan.n_pixels


def write_propagation(labels, result: np.ndarray, label_id: int, committed_slice: int) -> int:
    """Write ``label_id`` of a propagated stack into the Labels layer ``labels`` as one undo step; returns the
    number of slices written (0: the object was found on no other slice)."""
    written = 0
    with labels.block_history():
        for t, write in propagation_writes(result, labels.data, label_id, committed_slice):
            rr, cc = np.nonzero(write)
            labels.data_setitem((np.full(rr.shape, t, np.intp), rr, cc), label_id)
            written += 1
    return written

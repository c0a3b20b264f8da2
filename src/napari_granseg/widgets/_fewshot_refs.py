"""Few-shot references from a Points or Shapes layer: points, boxes and scribbles per slice of a series.

Why a module of its own: the widget passes these to ``FewShotSegmenter.add_reference(points=, box=, scribble=)``;
turning napari's shapes (rectangles, paths, polygons, ellipses) into those prompts is pure geometry, tested alone.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..engine.prompts import sample_polyline

__all__ = ["SCRIBBLE_POINTS", "prompts_by_slice"]

#: points sampled along each scribble (path, line or polygon outline) used as a reference prompt
SCRIBBLE_POINTS = 12

def prompts_by_slice(layer: Any) -> dict[int, dict]:
    """Reference prompts per slice from a Points or Shapes layer: {slice: {"points"|"scribble"|"box": ...}}.

    Coordinates are (x, y) pixels as the engine takes them. Points are positive clicks; a rectangle is a box
    (one per slice); a path, line or polygon is a scribble (:data:`SCRIBBLE_POINTS` points along it).
    """
    from napari.layers import Points, Shapes

    out: dict[int, dict] = {}
    if isinstance(layer, Points):
        pts = np.asarray(layer.data)
        if pts.ndim != 2 or pts.shape[1] < 3 or len(pts) == 0:
            raise ValueError(f"the points layer {layer.name!r} needs points on the slices (3D points: slice, "
                             f"row, col): add points while viewing a slice of the series.")
        for z, r, c in pts[:, -3:]:
            out.setdefault(int(round(z)), {}).setdefault("points", []).append([float(c), float(r)])
        return out
    if isinstance(layer, Shapes):
        for verts, kind in zip(layer.data, layer.shape_type):
            verts = np.asarray(verts)
            if verts.shape[1] < 3:
                raise ValueError(f"shapes layer {layer.name!r} is 2D: draw the shapes while viewing a slice of "
                                 f"the series (3D shapes: slice, row, col).")
            z = int(round(float(verts[0, -3])))
            xy = verts[:, [-1, -2]].astype(float)
            entry = out.setdefault(z, {})
            if kind == "rectangle":
                if "box" in entry:
                    raise ValueError(f"slice {z} of {layer.name!r} has two rectangles: one box per reference "
                                     f"slice (use points or scribbles for more objects).")
                entry["box"] = [xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()]
            else:
                closed = kind in ("polygon", "ellipse")
                entry.setdefault("scribble", []).extend(sample_polyline(xy, SCRIBBLE_POINTS, closed).tolist())
        if not out:
            raise ValueError(f"the shapes layer {layer.name!r} is empty: draw a rectangle or a path on a "
                             f"reference slice.")
        return out
    raise ValueError(f"{layer.name!r} is not a Points or Shapes layer")

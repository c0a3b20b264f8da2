"""The prompt layers of the interactive widget: clicks (Points) and boxes/scribbles (Shapes), per image.

Why a class of its own: a click must reach the prompts layer whatever order the user opened things in.
napari sends a canvas click to the ACTIVE layer only, and a plugin dock gets a ``PublicOnlyProxy`` of the
viewer, whose layers are proxies too (``is`` never matches them). So this module

- finds its layers by NAME (never by identity),
- creates them for the widget's image (same number of dimensions, scale and translate), empties them when
  the image changes, and
- makes the Points layer active in add mode (or the Shapes layer in rectangle / path mode for boxes and
  scribbles) whenever the widget takes the pointer, deferring to the end of napari's own layer-insert
  handling, which would otherwise make the newly added image active again.

Prompts on the displayed slice are read back as model input with :meth:`PromptLayers.read`.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .ports import Prompts

__all__ = ["PromptLayers", "Prompts", "POINTS_NAME", "SHAPES_NAME", "MODES", "POSITIVE_COLOR",
           "NEGATIVE_COLOR", "scribble_points", "unwrap"]

POINTS_NAME = "granseg prompts"
SHAPES_NAME = "granseg boxes and scribbles"
POSITIVE_COLOR = (0.1, 0.9, 0.2, 1.0)
NEGATIVE_COLOR = (1.0, 0.1, 0.8, 1.0)
#: pointer modes -> (layer name, napari mode of that layer)
MODES = {"click": (POINTS_NAME, "add"), "box": (SHAPES_NAME, "add_rectangle"), "scribble": (SHAPES_NAME, "add_path")}
#: at most this many points are sampled along one scribble
SCRIBBLE_POINTS = 8


def unwrap(obj: Any) -> Any:
    """The object behind napari's ``PublicOnlyProxy`` (or ``obj`` itself)."""
    return getattr(obj, "__wrapped__", obj)


def spatial_shape(layer) -> tuple[int, ...]:
    """Shape of an Image layer without the RGB(A) channel axis (level 0 of a pyramid)."""
    from ...engine.source import level0

    shape = tuple(int(s) for s in level0(layer.data, bool(layer.multiscale)).shape)
    return shape[:-1] if layer.rgb else shape


def scribble_points(vertices_rc: np.ndarray, n_max: int = SCRIBBLE_POINTS) -> np.ndarray:
    """Up to ``n_max`` (row, col) points spread evenly along a polyline (a scribble), its ends included."""
    from ...engine.prompts import sample_polyline

    v = np.asarray(vertices_rc, float).reshape(-1, 2)
    length = float(np.linalg.norm(np.diff(v, axis=0), axis=1).sum()) if len(v) > 1 else 0.0
    return sample_polyline(v, int(min(n_max, max(2, np.ceil(length / 4.0)))))  # about one click per 4 px


class PromptLayers:
    """Creates, finds, empties and activates the prompt layers of one widget (see the module docstring).

    viewer: the viewer as napari handed it to the widget (may be a proxy).
    on_change: called when prompts are added, moved or removed (the widget schedules a preview).
    bind_keys: called once with each new prompt layer (the widget binds its shortcuts on it).
    negative: returns True while new prompts should be negative (the widget's toggle).
    defer: runs a callable after the current napari event has been handled (a zero-delay QTimer).
    """

    def __init__(self, viewer, on_change: Callable[[], None], bind_keys: Callable[[Any], None],
                 negative: Callable[[], bool], defer: Callable[[Callable[[], None]], None]):
        self.viewer = viewer
        self._on_change = on_change
        self._bind_keys = bind_keys
        self._negative = negative
        self._defer = defer
        self.image_name: str | None = None
        self.mode = "click"
        self._shift_at_press = False

    # ------------------------------------------------------------------ layers by name
    def _get(self, name: str):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    @property
    def points(self):
        return self._get(POINTS_NAME)

    @property
    def shapes(self):
        return self._get(SHAPES_NAME)

    @property
    def names(self) -> tuple[str, str]:
        return POINTS_NAME, SHAPES_NAME

    def is_active(self) -> bool:
        """Whether a canvas click goes to a prompt layer (the active layer is one of ours, in an add mode)."""
        active = self.viewer.layers.selection.active
        if active is None or active.name not in self.names:
            return False
        return str(active.mode) in ("add", "add_rectangle", "add_path")

    # ------------------------------------------------------------------ attach to an image
    def attach(self, image_layer, activate: bool = True) -> None:
        """Make the prompt layers fit ``image_layer`` (create, or empty them for a new image); activate clicks."""
        nd = int(image_layer.ndim)
        same_image = self.image_name == image_layer.name
        for name in self.names:
            layer = self._get(name)
            if layer is not None and int(layer.ndim) != nd:
                self.viewer.layers.remove(layer)
        pts, shp = self.points, self.shapes
        if pts is None:
            pts = self._add_points(image_layer, nd)
        elif not same_image and len(pts.data):
            pts.data = np.empty((0, nd))
        if shp is None:
            shp = self._add_shapes(image_layer, nd)
        elif not same_image and len(shp.data):
            shp.data = []
        for layer in (shp, pts):
            layer.scale, layer.translate = image_layer.scale, image_layer.translate
        self.image_name = image_layer.name
        if activate:
            self.activate(self.mode, deferred=True)

    def add_a_missing_layer(self, image_layer) -> bool:
        """Create the points or the shapes layer if it does not exist (one per call); False if both exist."""
        nd = int(image_layer.ndim)
        if self.points is None:
            self._add_points(image_layer, nd)
            return True
        if self.shapes is None:
            self._add_shapes(image_layer, nd)
            return True
        return False

    def _add_points(self, image_layer, nd: int):
        import pandas as pd

        size = max(4.0, min(spatial_shape(image_layer)[-2:]) / 40)
        pts = self.viewer.add_points(
            np.empty((0, nd)), ndim=nd, name=POINTS_NAME, size=size,
            features=pd.DataFrame({"positive": pd.Series([], dtype=bool)}),
            feature_defaults={"positive": True}, face_color="#19e533", border_color="white", border_width=0.1,
            scale=image_layer.scale, translate=image_layer.translate)
        pts.events.data.connect(self._data_changed)
        pts.mouse_drag_callbacks.insert(0, self._on_press)
        self._bind_keys(pts)
        return pts

    def _add_shapes(self, image_layer, nd: int):
        import pandas as pd

        shp = self.viewer.add_shapes(
            None, ndim=nd, name=SHAPES_NAME, edge_color="#19e533", face_color=[0, 0, 0, 0],
            edge_width=max(1.0, min(spatial_shape(image_layer)[-2:]) / 200),
            features=pd.DataFrame({"positive": pd.Series([], dtype=bool)}),
            feature_defaults={"positive": True}, scale=image_layer.scale, translate=image_layer.translate)
        shp.events.data.connect(self._data_changed)
        shp.mouse_drag_callbacks.insert(0, self._on_press)
        self._bind_keys(shp)
        return shp

    def activate(self, mode: str | None = None, deferred: bool = False) -> None:
        """Select the prompt layer of ``mode`` ("click", "box", "scribble") in its add mode.

        deferred: do it after the napari event being handled (napari makes an inserted layer active only
        after its insert handlers ran, which would undo an immediate selection).
        """
        mode = mode or self.mode
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: use one of {sorted(MODES)}")
        self.mode = mode

        def do():
            name, layer_mode = MODES[self.mode]
            layer = self._get(name)
            if layer is None:
                return
            self.viewer.layers.selection.active = layer
            layer.mode = layer_mode
            self.sync_sign()

        do()
        if deferred:
            self._defer(do)

    def sync_sign(self) -> None:
        """New prompts take the sign of the widget's negative toggle."""
        positive = not self._negative()
        for layer in (self.points, self.shapes):
            if layer is not None:
                layer.feature_defaults = {"positive": positive}
                if layer.name == SHAPES_NAME:
                    color = POSITIVE_COLOR if positive else NEGATIVE_COLOR
                    layer.current_edge_color = color

    # ------------------------------------------------------------------ events
    def _on_press(self, layer, event) -> None:
        """Runs before napari's add-mode callback: the sign of the prompt about to be added (Shift = negative)."""
        self._shift_at_press = "Shift" in event.modifiers
        positive = not (self._shift_at_press or self._negative())
        layer.feature_defaults = {"positive": positive}

    def _data_changed(self, event=None) -> None:
        action = str(getattr(event, "action", "changed"))
        if action not in ("added", "removed", "changed"):
            return
        self._restyle()
        self._on_change()

    def _restyle(self) -> None:
        pts = self.points
        if pts is None or len(pts.data) == 0:
            return
        pos = _positive_flags(pts, len(pts.data))
        pts.face_color = np.where(pos[:, None], POSITIVE_COLOR, NEGATIVE_COLOR)
        pts.symbol = np.where(pos, "disc", "cross").tolist()

    # ------------------------------------------------------------------ edit
    def add_point(self, coords: list[float], positive: bool) -> None:
        pts = self.points
        pts.feature_defaults = {"positive": bool(positive)}
        pts.add(np.asarray([coords], float))
        self.sync_sign()

    def add_shape(self, vertices: np.ndarray, kind: str, positive: bool = True) -> None:
        """Add a rectangle (kind "rectangle", 2 opposite corners or 4 vertices) or a scribble ("path")."""
        shp = self.shapes
        shp.feature_defaults = {"positive": bool(positive)}
        shp.add(np.asarray(vertices, float), shape_type=kind)
        self.sync_sign()

    def clear_slice(self, index: tuple[int, ...]) -> None:
        """Remove the prompts of slice ``index`` (all prompts for a 2D image)."""
        pts = self.points
        if pts is not None and len(pts.data):
            on = _on_slice(np.asarray(pts.data), index)
            if on.any():
                pts.selected_data = set(np.nonzero(on)[0].tolist())
                pts.remove_selected()
        shp = self.shapes
        if shp is not None and len(shp.data):
            on = np.array([_on_slice(np.asarray(v)[:1], index)[0] for v in shp.data])
            if on.any():
                shp.selected_data = set(np.nonzero(on)[0].tolist())
                shp.remove_selected()

    def count(self) -> int:
        return sum(0 if layer is None else len(layer.data) for layer in (self.points, self.shapes))

    # ------------------------------------------------------------------ model input
    def read(self, index: tuple[int, ...], hw: tuple[int, int]) -> Prompts:
        """Points (clicks + scribble samples) and the newest box on slice ``index``, in (x, y) pixels."""
        h, w = hw
        rows, cols, signs = [], [], []
        pts = self.points
        if pts is not None and len(pts.data):
            data = np.asarray(pts.data, float)
            on = _on_slice(data, index)
            rows += data[on, -2].tolist()
            cols += data[on, -1].tolist()
            signs += _positive_flags(pts, len(data))[on].tolist()
        box = None
        shp = self.shapes
        if shp is not None and len(shp.data):
            flags = _positive_flags(shp, len(shp.data))
            for verts, kind, positive in zip(shp.data, shp.shape_type, flags):
                verts = np.asarray(verts, float)
                if not _on_slice(verts[:1], index)[0]:
                    continue
                rc = verts[:, -2:]
                if kind == "rectangle":
                    y0, x0 = np.clip(rc.min(0), 0, [h - 1, w - 1])
                    y1, x1 = np.clip(rc.max(0), 0, [h - 1, w - 1])
                    box = np.array([x0, y0, x1, y1], np.float32)
                elif kind in ("path", "line", "polygon"):
                    sampled = scribble_points(rc)
                    rows += sampled[:, 0].tolist()
                    cols += sampled[:, 1].tolist()
                    signs += [bool(positive)] * len(sampled)
        r, c = np.asarray(rows, float), np.asarray(cols, float)
        inside = (r >= -0.5) & (r <= h - 0.5) & (c >= -0.5) & (c <= w - 0.5)
        xy = np.stack([np.clip(c[inside], 0, w - 1), np.clip(r[inside], 0, h - 1)], axis=1).astype(np.float32)
        labels = np.asarray(signs, bool)[inside].astype(np.int32) if len(signs) else np.empty(0, np.int32)
        return Prompts(xy.reshape(-1, 2), labels, box, int((~inside).sum()))


def _on_slice(data: np.ndarray, index: tuple[int, ...]) -> np.ndarray:
    lead = len(index)
    if not lead or len(data) == 0:
        return np.ones(len(data), bool)
    return np.all(np.round(data[:, :lead]) == np.asarray(index), axis=1)


def _positive_flags(layer, n: int) -> np.ndarray:
    feats = layer.features
    if "positive" in feats and len(feats) == n:
        return feats["positive"].to_numpy(dtype=bool)
    return np.ones(n, bool)

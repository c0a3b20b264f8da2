"""The napari side of the interactive session: the :class:`~.ports.LayerPort` over a viewer.

Why apart from the session: everything here touches napari layers and nothing here decides anything. Layers
are looked up by NAME (a plugin dock gets napari's ``PublicOnlyProxy`` of the viewer, whose layers never
compare ``is``-equal to the events' layers):

- the prompt layers (clicks, boxes, scribbles) are :class:`~.prompt_layers.PromptLayers`;
- the yellow preview Labels layer is created once per image size and reused (its data is replaced, never
  copied, on the GUI thread);
- commits and propagations go through :mod:`.writes`: background pixels only, one undo step each, so Ctrl+Z
  in the labels layer (or Undo) removes exactly one write; every write, Undo and Redo is also autosaved
  (:func:`~napari_granseg.widgets.recovery_hooks.record_write`) before the port returns, so the pixels are on
  disk before the session says "committed" (crash recovery);
- the slice shown (``viewer.dims``) is the one segmented, in the 2D view only.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .._common import WidgetError
from ..recovery_hooks import record_write
from .image_source import channel_choices, level0
from .ports import ImageInfo, Prompts
from .prompt_layers import POINTS_NAME, SHAPES_NAME, PromptLayers, spatial_shape, unwrap
from .writes import write_object, write_propagation

__all__ = ["NapariLayers", "PREVIEW_NAME", "LABELS_NAME", "NEW_LABELS_ITEM"]

PREVIEW_NAME = "granseg preview"
LABELS_NAME = "granseg labels"
NEW_LABELS_ITEM = f"new layer: {LABELS_NAME}"


class NapariLayers:
    """The layer port of one widget (see the module docstring).

    viewer: the viewer napari handed the widget (may be a proxy). bind_keys(layer): binds the widget's
    shortcuts on a new prompt layer. negative(): True while new prompts are negative. defer(fn): runs ``fn``
    after the napari event being handled (a zero-delay QTimer).
    """

    def __init__(self, viewer, bind_keys: Callable[[Any], None], negative: Callable[[], bool],
                 defer: Callable[[Callable[[], None]], None]):
        self.viewer = viewer
        self._listeners: list[Callable[[], None]] = []
        self.prompts = PromptLayers(viewer, self._prompts_changed, bind_keys, negative, defer)
        self._blank: np.ndarray | None = None
        self._image_of: dict[str, str] = {}  # labels layer -> the image it was targeted over (crash recovery)

    def bind(self, on_prompts_changed: Callable[[], None]) -> None:
        self._listeners.append(on_prompts_changed)

    def _prompts_changed(self) -> None:
        for fn in list(self._listeners):
            fn()

    def _get(self, name: str | None):
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    # ------------------------------------------------------------------ images
    def own(self, name: str) -> bool:
        """The widget's own layers (never offered as an image or a labels target)."""
        return name in (POINTS_NAME, SHAPES_NAME, PREVIEW_NAME)

    def names(self, kind: str) -> list[str]:
        """The names of the viewer's "image" or "labels" layers, the widget's own layers left out."""
        from napari.layers import Image, Labels

        cls = Image if kind == "image" else Labels
        return [l.name for l in self.viewer.layers if isinstance(unwrap(l), cls) and not self.own(l.name)]

    def image(self, name: str | None) -> ImageInfo | None:
        layer = self._get(name)
        if layer is None:
            return None
        return ImageInfo(layer.name, level0(layer), spatial_shape(layer), bool(layer.rgb))

    def layer_data(self, names: Sequence[str]) -> list:
        return [level0(self.viewer.layers[n]) for n in names if n in self.viewer.layers]

    def channel_choices(self, name: str) -> list:
        from napari.layers import Image

        layer = self._get(name)
        if layer is None:
            return []
        others = [l for l in self.viewer.layers if isinstance(unwrap(l), Image) and not self.own(l.name)]
        return channel_choices(layer, others)

    def current_index(self, name: str) -> tuple[int, ...]:
        layer = self._get(name)
        nd = len(spatial_shape(layer))
        if nd == 2:
            return ()
        data_pos = np.asarray(layer.world_to_data(self.viewer.dims.point), float)[-nd:]
        shape = spatial_shape(layer)
        return tuple(int(np.clip(np.round(data_pos[i]), 0, shape[i] - 1)) for i in range(nd - 2))

    def check_view(self) -> None:
        dims = self.viewer.dims
        if dims.ndisplay != 2:
            raise WidgetError("the interactive widget works in the 2D view: press Ctrl+Y (or the 2D/3D button, "
                              "bottom left) to switch back to 2D")
        n = dims.ndim
        if set(dims.displayed) != {n - 2, n - 1}:
            raise WidgetError("the image's last two axes (rows, columns) must be the ones displayed: undo the axis "
                              "roll/transpose (Ctrl+E / Ctrl+T) or reset with viewer.dims.order = "
                              "tuple(range(viewer.dims.ndim))")

    # ------------------------------------------------------------------ prompt layers and the preview layer
    def prompts_image(self) -> str | None:
        return self.prompts.image_name if self.prompts.points is not None else None

    def add_a_missing_layer(self, name: str) -> bool:
        """Add one of the preview / prompt layers the image lacks; False when none is missing (the widget adds
        them one at a time, letting napari draw in between)."""
        layer = self._get(name)
        if self._get(PREVIEW_NAME) is None:
            self._ensure_preview_layer(layer)
            return True
        return self.prompts.add_a_missing_layer(layer)

    def attach(self, name: str) -> None:
        """Give the prompt layers (and the preview layer) to image ``name`` and make clicks prompts."""
        layer = self._get(name)
        self._ensure_preview_layer(layer)
        self.prompts.attach(layer)

    def _ensure_preview_layer(self, image_layer):
        hw = spatial_shape(image_layer)[-2:]
        layer = self._get(PREVIEW_NAME)
        if layer is None or tuple(layer.data.shape) != hw:
            self._blank = np.zeros(hw, np.uint8)
            if layer is None:
                from napari.utils.colormaps import DirectLabelColormap

                layer = self.viewer.add_labels(
                    self._blank, name=PREVIEW_NAME, opacity=0.55,
                    colormap=DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: "yellow"}))
                layer.editable = False
            else:
                layer.data = self._blank
            for name in (SHAPES_NAME, POINTS_NAME):  # prompts stay on top of the preview
                if name in self.viewer.layers:
                    self.viewer.layers.move(self.viewer.layers.index(self.viewer.layers[name]), len(self.viewer.layers))
        layer.scale, layer.translate = image_layer.scale[-2:], image_layer.translate[-2:]
        return layer

    def read_prompts(self, index: tuple[int, ...], hw: tuple[int, int]) -> Prompts:
        return self.prompts.read(index, hw)

    def prompt_count(self) -> int:
        return self.prompts.count()

    def add_point(self, coords: Sequence[float], positive: bool) -> None:
        self.prompts.add_point(list(coords), positive)

    def clear_prompts(self, index: tuple[int, ...]) -> None:
        self.prompts.clear_slice(index)

    def activate(self, mode: str) -> None:
        self.prompts.activate(mode)

    def click_target(self) -> str | None:
        if self.prompts.is_active():
            return None
        active = self.viewer.layers.selection.active
        return "" if active is None else active.name

    def show_preview(self, mask: np.ndarray) -> None:
        layer = self._get(PREVIEW_NAME)
        if layer is None or tuple(layer.data.shape) != tuple(mask.shape):
            layer = self._ensure_preview_layer(self._get(self.prompts.image_name))
        layer.data = mask

    def clear_preview(self) -> None:
        layer = self._get(PREVIEW_NAME)
        if layer is not None and self._blank is not None and layer.data is not self._blank:
            layer.data = self._blank

    # ------------------------------------------------------------------ labels
    def labels_region(self, name: str | None, index: tuple[int, ...]):
        layer = self._get(name)
        if layer is None:
            return None
        return layer.data[index] if index else layer.data

    def target_labels(self, image: ImageInfo, name: str | None, shape: tuple[int, ...]) -> str:
        """The labels layer ``name``, or a new "granseg labels" of ``shape`` beside ``image``; checks the shape."""
        labels = self._get(name)
        if labels is None:
            labels = self._get(LABELS_NAME)
        if labels is None:
            image_layer = self._get(image.name)
            nd = len(shape)
            labels = self.viewer.add_labels(np.zeros(shape, np.int32), name=LABELS_NAME,
                                            scale=image_layer.scale[-nd:], translate=image_layer.translate[-nd:])
            self.viewer.layers.move(self.viewer.layers.index(labels), self.viewer.layers.index(PREVIEW_NAME)
                                    if PREVIEW_NAME in self.viewer.layers else len(self.viewer.layers))
        if tuple(labels.data.shape) != tuple(shape):
            raise WidgetError(f"labels layer {labels.name!r} has shape {tuple(labels.data.shape)} but image "
                              f"{image.name!r} has {tuple(shape)}: pick another Labels layer or '{NEW_LABELS_ITEM}'")
        self._image_of[labels.name] = image.name
        return labels.name

    def _record(self, labels: str, writer: str, index: tuple[int, ...] = (), where: np.ndarray | None = None) -> None:
        """Autosave what was just written into ``labels`` (index/where bound it; see ``record_write``)."""
        image = self._image_of.get(labels) or self.prompts.image_name
        record_write(image, self.viewer.layers[labels], index, where, writer, self.viewer)

    def write_object(self, labels: str, index: tuple[int, ...], mask: np.ndarray,
                     refine_label: int | None) -> tuple[int, int]:
        written = write_object(self.viewer.layers[labels], index, mask, refine_label, WidgetError)
        # a refine may drop pixels outside the new mask: the whole slice (only changed chunks are stored)
        self._record(labels, "interactive refine" if refine_label else "interactive commit", index,
                     None if refine_label else mask)
        return written

    def write_propagation(self, labels: str, result: np.ndarray, label_id: int, committed_slice: int) -> int:
        written = write_propagation(self.viewer.layers[labels], result, label_id, committed_slice)
        self._record(labels, "propagation")
        return written

    def can_undo(self, labels: str | None) -> bool:
        layer = self._get(labels)
        return layer is not None and bool(len(unwrap(layer)._undo_history))

    def undo(self, labels: str) -> None:
        self.viewer.layers[labels].undo()
        self._record(labels, "undo")

    def redo(self, labels: str) -> None:
        layer = self._get(labels)
        if layer is not None:
            layer.redo()
            self._record(labels, "redo")

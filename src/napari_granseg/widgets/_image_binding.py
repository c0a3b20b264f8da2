"""Which image the interactive widget segments, and the layers it keeps beside it (mixin of the dock).

Why: a person opens the image before or after the widget, several images, and switches between them; the
widget must follow in every order. Layers are looked up by NAME (a plugin dock gets napari's
``PublicOnlyProxy`` of the viewer, whose layers never compare ``is``-equal to the events' layers):

- a newly added image becomes the widget's image; the Image box lists the images (not the widget's layers);
- picking an image (also re-picking the same one) gives it the prompt layers and makes clicks prompts;
- the yellow preview Labels layer is created once per image size and reused (its data is replaced, never
  copied, on the GUI thread);
- the slice shown (``viewer.dims``) is the one segmented, in the 2D view only.
"""
from __future__ import annotations

import numpy as np
from qtpy.QtCore import QTimer

from ._common import LAYER_SPACING_MS
from ._image_source import ChannelChoice, channel_choices
from ._predictor import model_size
from ._prompt_layers import POINTS_NAME, SHAPES_NAME, spatial_shape, unwrap

__all__ = ["ImageBinding", "PREVIEW_NAME", "LABELS_NAME", "NEW_LABELS_ITEM"]

PREVIEW_NAME = "granseg preview"
LABELS_NAME = "granseg labels"
NEW_LABELS_ITEM = f"new layer: {LABELS_NAME}"


class ImageBinding:
    """Mixin of :class:`~napari_granseg.widgets.interactive.InteractiveWidget` (uses its combos, prompts,
    preview controller and ``_refresh``; raises its ``error_type`` for user mistakes)."""

    error_type: type[Exception] = ValueError

    def _own(self, name: str) -> bool:
        return name in (POINTS_NAME, SHAPES_NAME, PREVIEW_NAME)

    def _layer_inserted(self, event=None) -> None:
        from napari.layers import Image

        new = getattr(event, "value", None)
        self._refresh_layer_choices()
        if isinstance(unwrap(new), Image):  # a new image becomes the widget's image (the newest wins)
            self.image_combo.setCurrentText(new.name)
            QTimer.singleShot(0, self._image_changed)

    def _layer_removed(self, event=None) -> None:
        self._refresh_layer_choices()
        if self.image_layer is not None and self.prompts.points is None:
            QTimer.singleShot(0, self._image_changed)
        if self.prompts.image_name is not None and self.prompts.image_name not in self.viewer.layers:
            self.preview.invalidate()
        self._refresh()

    def _refresh_layer_choices(self, event=None) -> None:
        from napari.layers import Image, Labels

        for combo, kind, extra in ((self.image_combo, Image, []), (self.labels_combo, Labels, [NEW_LABELS_ITEM])):
            current = combo.currentText()
            names = [l.name for l in self.viewer.layers if isinstance(unwrap(l), kind) and not self._own(l.name)]
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(extra + names)
            if current in extra + names:
                combo.setCurrentText(current)
            elif kind is Image and names:
                combo.setCurrentIndex(len(names) - 1)
            elif kind is Labels and LABELS_NAME in names:
                combo.setCurrentText(LABELS_NAME)
            combo.blockSignals(False)
        if self.image_combo.currentText() != (self.prompts.image_name or ""):
            QTimer.singleShot(0, self._image_changed)

    def _image_changed(self, gradual: bool = True) -> None:
        """Give the prompt layers (and the preview layer) to the image in the Image box and activate clicks.

        gradual: add at most one missing layer, let napari draw it, and come back (``LAYER_SPACING_MS``: napari's
        ``add_*`` of one layer already freezes the viewer 130-300 ms on a laptop CPU; three at once added up).
        A direct call (``add_prompt`` from the console) passes False and gets all layers at once.
        """
        if gradual and (self._layer_step_pending or not self._warmed_up):
            return  # the scheduled step (or the end of the warm-up) finishes the job
        layer = self.image_layer
        if layer is None or int(layer.ndim) < 2:
            self._refresh()
            self._layers_ready()
            return
        if gradual and self._add_a_missing_layer(layer):
            self._layer_step_pending = True
            QTimer.singleShot(LAYER_SPACING_MS, self._next_layer_step)
            return
        if self.prompts.image_name != layer.name:
            self.preview.invalidate()
        self._refresh_channel_choices(layer)
        self._ensure_preview_layer(layer)
        self.prompts.attach(layer)
        self._refresh()
        self._layers_ready()

    def _next_layer_step(self) -> None:
        self._layer_step_pending = False
        self._image_changed()

    def _add_a_missing_layer(self, image_layer) -> bool:
        """Add one of the preview / prompt layers the image lacks; False when none is missing."""
        if self.preview_layer is None:
            self._ensure_preview_layer(image_layer)
            return True
        return self.prompts.add_a_missing_layer(image_layer)

    def _layers_ready(self) -> None:
        """Run what waited for the image's layers (the first model load, the zoo list)."""
        waiting, self._when_layers_ready = self._when_layers_ready, []
        for fn in waiting:
            fn()

    def _ensure_preview_layer(self, image_layer):
        hw = spatial_shape(image_layer)[-2:]
        layer = self.preview_layer
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

    # ------------------------------------------------------------------ scale (tiles) and channels
    def _refresh_channel_choices(self, layer) -> None:
        from napari.layers import Image

        others = [l for l in self.viewer.layers if isinstance(unwrap(l), Image) and not self._own(l.name)]
        self._channel_choices = channel_choices(layer, others)
        current = self.channels_combo.currentText()
        self.channels_combo.blockSignals(True)
        self.channels_combo.clear()
        self.channels_combo.addItems([c.text for c in self._channel_choices])
        if current in [c.text for c in self._channel_choices]:
            self.channels_combo.setCurrentText(current)
        self.channels_combo.blockSignals(False)
        self.channels_combo.setEnabled(len(self._channel_choices) > 1)

    @property
    def channel_choice(self) -> ChannelChoice | None:
        """The channels box's choice; None: the image as it is."""
        text = self.channels_combo.currentText()
        for choice in getattr(self, "_channel_choices", ()):
            if choice.text == text and choice.kind != "image":
                return choice
        return None

    def set_channels(self, text: str) -> None:
        """Pick an entry of the channels box by its text (e.g. "channel 1"); the preview follows."""
        items = [self.channels_combo.itemText(i) for i in range(self.channels_combo.count())]
        if text not in items:
            raise self.error_type(f"channels {text!r} is not offered for this image; choose one of {items}")
        self.channels_combo.setCurrentText(text)

    def tile_for(self, hw) -> int | None:
        """The tile size (pixels) when the image of size ``hw`` is tiled with the Scale setting, else None."""
        from ..engine.tiling import choose_scale

        size = model_size(self.predictor)
        tile = int(self.tile_spin.value()) or size
        scale = self.scale_combo.currentText()
        if tile is None:  # model size unknown (remote): tile only when asked, with a tile size
            return None
        if choose_scale(tuple(hw), size or tile, scale) != "tile":
            return None
        return tile

    def tiled_predictor(self, tile: int):
        """The :class:`~napari_granseg.engine.tiling.TiledPredictor` over the widget's predictor for ``tile``
        (kept, so tiles embedded once are not embedded again)."""
        from ..engine.tiling import TiledPredictor

        key = (id(self.predictor), int(tile))
        if getattr(self, "_tiled", (None, None))[0] != key:
            self._tiled = (key, TiledPredictor(self.predictor, int(tile)))
        return self._tiled[1]

    @property
    def image_layer(self):
        """The Image layer in the widget's Image box (None if there is none)."""
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    @property
    def labels_layer(self):
        """The target Labels layer (None until the first commit creates "granseg labels")."""
        name = self.labels_combo.currentText()
        return self.viewer.layers[name] if name and name != NEW_LABELS_ITEM and name in self.viewer.layers else None

    @property
    def prompts_layer(self):
        return self.prompts.points

    @property
    def shapes_layer(self):
        return self.prompts.shapes

    @property
    def preview_layer(self):
        return self.viewer.layers[PREVIEW_NAME] if PREVIEW_NAME in self.viewer.layers else None

    @property
    def granularity(self) -> float:
        return float(round(self.granularity_slider.value(), 3))

    @granularity.setter
    def granularity(self, value: float) -> None:
        self.granularity_slider.setValue(float(np.clip(value, 0.1, 1.0)))

    def _require_image(self):
        layer = self.image_layer
        if layer is None:
            raise self.error_type("no image layer: open an image first (File > Open, or File > Open Sample > "
                              "GranSeg), then pick it in the widget's Image box")
        if int(layer.ndim) < 2:
            raise self.error_type(f"layer {layer.name!r} is 1D; the widget needs 2D images or stacks of them")
        return layer

    def _check_view(self) -> None:
        dims = self.viewer.dims
        if dims.ndisplay != 2:
            raise self.error_type("the interactive widget works in the 2D view: press Ctrl+Y (or the 2D/3D "
                              "button, bottom left) to switch back to 2D")
        n = dims.ndim
        if set(dims.displayed) != {n - 2, n - 1}:
            raise self.error_type("the image's last two axes (rows, columns) must be the ones displayed: undo the "
                              "axis roll/transpose (Ctrl+E / Ctrl+T) or reset with viewer.dims.order = "
                              "tuple(range(viewer.dims.ndim))")

    def current_index(self, layer=None) -> tuple[int, ...]:
        """Leading (z, t, ...) indices of the slice shown, in ``layer``'s data coordinates."""
        layer = layer or self._require_image()
        nd = int(layer.ndim)
        if nd == 2:
            return ()
        data_pos = np.asarray(layer.world_to_data(self.viewer.dims.point), float)[-nd:]
        shape = spatial_shape(layer)
        return tuple(int(np.clip(np.round(data_pos[i]), 0, shape[i] - 1)) for i in range(nd - 2))

    def current_slice_image(self, layer=None, index: tuple[int, ...] | None = None) -> np.ndarray:
        """The 2D slice (H, W[, C]) the widget segments (array-like; read in the worker)."""
        layer = layer or self._require_image()
        index = self.current_index(layer) if index is None else index
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        return data[tuple(index)] if index else data

    def _slice_changed(self, event=None) -> None:
        shown = self.preview.shown
        if shown is not None and self.image_layer is not None and shown.request.index != self.current_index():
            self.preview.invalidate()
        self.preview.schedule()


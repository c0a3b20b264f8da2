"""What the model sees of the session's image: the person's scale, tile and channels settings, the stack's
one intensity range, and the tiles already embedded.

Why a class: these choices change together with the image and the model, and the preview, "Embed all" and
the status all ask them; one owner answers. The settings are one immutable value (:class:`ImageSettings`).
The tile-or-downscale decision itself is the engine's :class:`~napari_granseg.engine.source.ImagePlan`'s.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .._common import WidgetError
from .jobs import TiledImage, model_size

__all__ = ["ImageSettings", "ModelView"]


@dataclass(frozen=True)
class ImageSettings:
    """scale: "auto", "tile" or "downscale"; tile: tile size in pixels (0: the model's input size); channels:
    the text of the channels entry ("" when the image has no choice)."""

    scale: str = "auto"
    tile: int = 0
    channels: str = ""


class ModelView:
    """What the model sees of the session's image (see the module docstring)."""

    def __init__(self):
        self.settings = ImageSettings()
        self.choices: list = []                                # ChannelChoice entries for the image
        self._intensity: dict[tuple, tuple[float, float] | None] = {}
        self._tiles: tuple[tuple, TiledImage] | None = None

    def set_choices(self, choices: list) -> None:
        """The channels entries of a (new) image; the current entry stays when the new image offers it."""
        self.choices = list(choices)
        texts = [c.text for c in self.choices]
        if self.settings.channels not in texts:
            self.settings = replace(self.settings, channels=texts[0] if texts else "")

    def set_channels(self, text: str) -> bool:
        """Pick a channels entry by its text; True when it changed."""
        texts = [c.text for c in self.choices]
        if text not in texts:
            raise WidgetError(f"channels {text!r} is not offered for this image; choose one of {texts}")
        changed = text != self.settings.channels
        self.settings = replace(self.settings, channels=text)
        return changed

    def set_scale(self, scale: str, tile: int) -> bool:
        """Scale and tile size; True when they changed."""
        from ...engine.tiling import check_scale, check_tile

        try:  # the engines' rule, as gs.segment(scale=, tile=) and the CLI check it
            scale, tile = check_scale(scale), check_tile(None if tile == 0 and not isinstance(tile, bool) else tile)
        except ValueError as err:
            raise WidgetError(f"{err} (the Tile box: 0 = the model's input size)") from None
        new = replace(self.settings, scale=scale, tile=tile or 0)
        changed, self.settings = new != self.settings, new
        return changed

    @property
    def choice(self):
        """The chosen channels entry; None: the image as it is."""
        for choice in self.choices:
            if choice.text == self.settings.channels and choice.kind != "image":
                return choice
        return None

    def tile_for(self, hw, predictor: Any) -> int | None:
        """The tile size (pixels) when an image of size ``hw`` is tiled, else None (downscaled): the engine's
        image plan decides, from the plane's shape alone (nothing is read)."""
        import numpy as np

        from ...engine.source import ImagePlan

        shape_only = np.broadcast_to(np.uint8(0), (int(hw[0]), int(hw[1])))
        plan = ImagePlan.from_array(shape_only, rgb=False, model_size=model_size(predictor),
                                    scale=self.settings.scale, tile=int(self.settings.tile) or None)
        return plan.tile_size if plan.tiled else None

    def tiles(self, tile: int, predictor: Any) -> TiledImage:
        """The tiles over ``predictor`` for ``tile`` (kept, so tiles embedded once are not embedded again)."""
        from ...engine.tiling import TiledPredictor

        key = (id(predictor), int(tile))
        if self._tiles is None or self._tiles[0] != key:
            self._tiles = (key, TiledImage(TiledPredictor(predictor, int(tile))))
        return self._tiles[1]

    def intensity(self, info) -> tuple[float, float] | None:
        """The stack's intensity range when already computed (None: the preview job computes it)."""
        return self._intensity.get((info.name, info.shape))

    def remember_intensity(self, key: tuple, value: tuple[float, float] | None) -> None:
        self._intensity[key] = value

"""What the user asks segment everything for: the generator's settings, their presets, and the granularity.

Why a module of its own: the widget, the batch CLI and the scripting API all build settings (presets per
device, a model's recommended values, single overrides) without running anything, and every invalid value
must be refused before the first decoder pass, with a message that says what to pass instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from numbers import Real

import numpy as np
import torch
from sam2.utils.amg import build_all_layer_point_grids

__all__ = ["AutomaticSettings", "default_thresholds", "model_defaults", "resolve_settings", "granularity_values"]


def default_thresholds(granularity: float | None) -> tuple[float, float]:
    """(pred_iou_thresh, stability_score_thresh): UnSAMv2's 0.65/0.7 for g < 0.5, 0.5/0.7 for g >= 0.5;
    sam2's own 0.8/0.95 for a stock model (granularity None).

    Why they depend on g: at low g the model proposes many small parts, whose predicted IoU is less reliable,
    so UnSAMv2's evaluation filters them harder.
    """
    if granularity is None:
        return 0.8, 0.95
    return (0.65, 0.7) if granularity < 0.5 else (0.5, 0.7)


@dataclass
class AutomaticSettings:
    """Settings of the whole-image generator; the names and meanings are sam2's.

    Defaults are UnSAMv2's evaluation settings (GPU); :meth:`for_device` picks a cheaper grid on a CPU.

    points_per_side: grid of ``points_per_side**2`` click prompts; cost is linear in the number of points
        (64 -> 4096 decoder passes, 24 -> 576). Small objects need a dense grid: at least one point per object.
    points_per_batch: prompts decoded together; only speed and memory change, not the masks.
    pred_iou_thresh / stability_score_thresh: drop masks the model itself rates poorly / that change a lot
        when the logit threshold moves by ``stability_score_offset``.
    mask_threshold: logit threshold for binary masks (-1 in UnSAMv2's evaluation, 0 in sam2).
    box_nms_thresh: box IoU above which the lower-scored of two masks is a duplicate.
    crop_n_layers: >0 also runs on 4, 16, ... overlapping crops (one encoder pass each: expensive), for
        small objects in large images. crop_* are sam2's crop settings.
    min_mask_region_area: >0 removes islands and fills holes smaller than this (pixels) in the final masks,
        then re-runs NMS (SAM 1's post-processing; sam2 1.1.0 instead needs its CUDA extension).
    use_m2m: UnSAMv2's mask-to-mask refinement: a second decoder pass per mask with its own logits as
        input (doubles decoder cost, sharper masks).
    multimask_output: stock SAM 2: 3 masks per point (sam2's default). UnSAMv2 always returns one mask per
        point; the flag only selects its IoU head (max of the multimask tokens, as upstream).
    """

    points_per_side: int | None = 64
    points_per_batch: int = 128
    pred_iou_thresh: float = 0.65
    stability_score_thresh: float = 0.7
    stability_score_offset: float = 0.7
    mask_threshold: float = -1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    point_grids: list[np.ndarray] | None = field(default=None, repr=False)
    min_mask_region_area: int = 0
    use_m2m: bool = True
    multimask_output: bool = True

    @classmethod
    def upstream(cls, granularity: float | None = 0.5, **overrides) -> "AutomaticSettings":
        """UnSAMv2's evaluation settings (points_per_side 64, batch 128, M2M); sam2's stock generator
        thresholds for a stock model (granularity None)."""
        iou, stab = default_thresholds(granularity)
        base = cls(pred_iou_thresh=iou, stability_score_thresh=stab)
        if granularity is None:
            base = replace(base, stability_score_offset=1.0, mask_threshold=0.0, use_m2m=False)
        return replace(base, **overrides)

    @classmethod
    def for_device(cls, device: str | torch.device | None, granularity: float | None = 0.5,
                   **overrides) -> "AutomaticSettings":
        """Presets: ``cuda``/``mps``: upstream's (64 points per side); ``cpu``: 24 points per side, batch 64
        (576 prompts instead of 4096: ~7x less decoder work; objects smaller than ~1/24 of the image side
        may be missed)."""
        kind = torch.device(device).type if device is not None else "cpu"
        if kind == "cpu":
            overrides = {"points_per_side": 24, "points_per_batch": 64, **overrides}
        return cls.upstream(granularity, **overrides)

    def updated(self, **changes) -> "AutomaticSettings":
        """A copy with ``changes``; unknown names raise with the list of valid ones."""
        valid = {f.name for f in fields(self)}
        bad = sorted(set(changes) - valid)
        if bad:
            raise TypeError(f"unknown setting(s) {bad}; valid settings are {sorted(valid)}")
        return replace(self, **changes)

    def check(self) -> None:
        """Raise a ValueError naming the setting when a value or the combination cannot run."""
        for f in fields(self):
            if f.name != "point_grids":
                _check_type(f.name, str(f.type), getattr(self, f.name))
        if (self.points_per_side is None) == (self.point_grids is None):
            raise ValueError("give exactly one of points_per_side (e.g. 32) or point_grids")
        if self.points_per_side is not None and self.points_per_side < 1:
            raise ValueError(f"points_per_side must be >= 1, got {self.points_per_side}")
        if self.points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {self.points_per_batch}")
        if self.crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be >= 0, got {self.crop_n_layers}")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):  # a score or an IoU
            if not 0.0 <= getattr(self, name) <= 1.0:  # above 1 every mask is dropped: empty labels, no word
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)} (e.g. --set {name}="
                                 f"{getattr(AutomaticSettings, name)!r})")
        if len(self.grids()) < self.crop_n_layers + 1:
            raise ValueError(f"point_grids has {len(self.grids())} grid(s) but crop_n_layers={self.crop_n_layers} "
                             f"needs {self.crop_n_layers + 1} (one per layer)")

    def grids(self) -> list[np.ndarray]:
        """One (N, 2) grid of click positions in [0, 1] per crop layer."""
        if self.point_grids is not None:
            return [np.asarray(g, np.float64) for g in self.point_grids]
        return build_all_layer_point_grids(self.points_per_side, self.crop_n_layers,
                                           self.crop_n_points_downscale_factor)


_KINDS = {"int": ("a whole number", lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool)),
          "float": ("a number", lambda v: isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                    and bool(np.isfinite(v))),
          "bool": ("true or false", lambda v: isinstance(v, (bool, np.bool_)))}


def _check_type(name: str, annotation: str, value) -> None:
    """A setting of the wrong type is refused by name before any work (``--set points_per_side=abc``)."""
    if value is None and "None" in annotation:
        return
    kind = annotation.split("|")[0].strip()
    if kind in _KINDS and not _KINDS[kind][1](value):
        raise ValueError(f"setting {name}={value!r} must be {_KINDS[kind][0]} (e.g. --set {name}="
                         f"{getattr(AutomaticSettings, name)!r})")


def validate_overrides(overrides: dict) -> None:
    """Check setting names and values (ValueError naming the setting) without running anything."""
    try:
        AutomaticSettings().updated(**overrides).check()
    except TypeError as err:
        raise ValueError(str(err)) from None


def model_defaults(predictor) -> dict:
    """Settings the predictor's model recommends (``LoadedModel.automatic_defaults``, e.g. the demo's)."""
    loaded = getattr(predictor, "loaded", None)
    return dict(getattr(loaded, "automatic_defaults", None) or {})


def resolve_settings(predictor, granularity: float | None, settings: AutomaticSettings | None,
                     overrides: dict) -> AutomaticSettings:
    """The settings a run uses: ``settings`` (default: the device preset with the model's recommendations),
    then single ``overrides``; checked before anything runs."""
    base = settings if settings is not None else AutomaticSettings.for_device(predictor.device, granularity,
                                                                             **model_defaults(predictor))
    resolved = base.updated(**overrides) if overrides else base
    resolved.check()
    return resolved


def granularity_values(predictor, granularity: float | None) -> np.ndarray | None:
    """``granularity`` as the decoder's (1,) float32 input, or None for a stock SAM 2 model.

    Raises when a granularity is asked of a model without a granularity input, or is outside [0.1, 1].
    """
    if granularity is None:
        return None
    if isinstance(granularity, bool) or not isinstance(granularity, (Real, np.number)):
        raise ValueError(f"granularity={granularity!r}: one whole-image run takes one number in [0.1, 1]; for "
                         f"several levels pass the list to gs.segment_everything (a parts-to-wholes hierarchy)")
    if not predictor.has_granularity:
        raise ValueError("this model has no granularity input (a stock SAM 2 model): pass granularity=None, or "
                         "load an UnSAMv2 model (gs.load_model('unsamv2-plus')) to choose a granularity")
    from ...models.unsamv2 import check_granularity

    check_granularity([granularity])
    return np.asarray([granularity], np.float32)

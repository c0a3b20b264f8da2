"""What a preview run segments: the prompts of the slice shown, g, what the model sees, refine input.

Why apart from the session: it is the one place that turns the session's state and the layer port's prompts
into a :class:`~.preview.PreviewRequest`, taken on the GUI thread and cheap (no full-size copy: the slice,
and the first time the stack's intensity range, are read in the job).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._common import WidgetError
from .jobs import label_logits, model_size
from .ports import ImageInfo, LayerPort, Prompts
from .preview import PreviewRequest

__all__ = ["RequestInputs", "build_request", "refine_input"]


@dataclass(frozen=True)
class RequestInputs:
    """The session's side of a request."""

    info: ImageInfo
    predictor: Any
    granularity: float | None          # None: the model has no granularity input
    choice: Any                        # the channels entry, None: the image as it is
    tile: int | None
    labels: str | None                 # the target labels layer (refine reads it)
    refine: bool
    intensity: tuple[float, float] | None   # the stack's range when already known


def refine_input(port: LayerPort, labels: str | None, predictor, index: tuple[int, ...], prompts: Prompts
                 ) -> tuple[np.ndarray | None, int | None]:
    """Low-res logits of the existing label under the first positive click, and its id; (None, None) if none."""
    pos = prompts.points_xy[prompts.point_labels == 1]
    region = port.labels_region(labels, index) if len(pos) else None
    if region is None:
        return None, None
    x, y = np.round(pos[0]).astype(int)
    label_id = int(region[y, x])
    if label_id == 0:
        return None, None
    return label_logits(region, label_id, model_size(predictor) // 4), label_id


def build_request(serial: int, port: LayerPort, inputs: RequestInputs, warn) -> PreviewRequest:
    """The request for the prompts on the slice shown; ``warn(text)`` gets a warning for the person."""
    info = inputs.info
    port.check_view()
    index = port.current_index(info.name)
    prompts = port.read_prompts(index, info.hw)
    if prompts.n_outside:
        warn(f"{prompts.n_outside} prompt point(s) lie outside the image ({info.hw[0]} x {info.hw[1]}) and are "
             f"ignored: delete them (prompts layer, select mode S, then Delete)")
    choice = inputs.choice
    model_index = () if choice is not None and choice.flattens_stack else index
    mask_input, refine = (refine_input(port, inputs.labels, inputs.predictor, index, prompts) if inputs.refine
                          else (None, None))
    if refine and inputs.tile:
        raise WidgetError("refine label works on the downscaled view: set Scale to 'downscale'")
    intensity, extra = None, {"channel": choice, "tile": inputs.tile}
    if choice is not None and choice.kind == "axis":
        extra["full"] = info.data
    elif choice is not None and choice.kind == "layers":
        extra["layer_data"] = port.layer_data(choice.layers)
    elif model_index:  # one intensity range per stack, computed once (in the job: it reads the stack)
        intensity = inputs.intensity
        if intensity is None:
            extra.update(stack=info.stack(), intensity_key=(info.name, info.shape))
    return PreviewRequest(serial, info.name, model_index, info.slice(index), prompts.points_xy,
                          prompts.point_labels, inputs.granularity, prompts.box, mask_input, refine, intensity, extra)

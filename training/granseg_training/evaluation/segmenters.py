"""Whole-image proposal functions for ``granseg-eval whole``: ``image -> [(mask, score), ...]``.

Why here and not in the plugin: pooling masks over many granularities is how UnSAMv2's paper measures
average recall (AR@k); no user of the plugin needs it. The masks themselves come from the plugin's engine
(``napari_granseg.engine.automatic.generate``), so the evaluation measures exactly what users run.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

__all__ = ["eval_segmenter", "UPSTREAM_GRANULARITIES"]

#: the granularities UnSAMv2's whole-image evaluation pools: 0.1, 0.2, ..., 1.0
UPSTREAM_GRANULARITIES = tuple(round(0.1 * k, 1) for k in range(1, 11))


def eval_segmenter(model, granularities: Sequence[float] = UPSTREAM_GRANULARITIES, precision: str | None = None,
                   **overrides) -> Callable[[np.ndarray], list[tuple[np.ndarray, float]]]:
    """A whole-image proposal function: ``image -> [(mask, score), ...]``, masks of every g pooled.

    As UnSAMv2's evaluation, masks from every g in ``granularities`` are pooled and the score is the
    predicted IoU. ``model``: a LoadedModel (UnSAMv2) or a GranularityPredictor (a LoadedModel gets a
    predictor with mask threshold -1, as the evaluation binarises). ``precision`` and ``overrides`` (any
    ``AutomaticSettings`` field) are passed on to ``generate``. The image is encoded once; every further g
    reuses the cached embedding.
    """
    from napari_granseg.engine.automatic import generate
    from napari_granseg.engine.interactive import GranularityPredictor

    predictor = model if isinstance(model, GranularityPredictor) else GranularityPredictor(model, mask_threshold=-1.0)

    def segment(image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        out: list[tuple[np.ndarray, float]] = []
        for g in granularities:
            for rec in generate(predictor, image, float(g), precision=precision, **overrides):
                out.append((rec["segmentation"], rec["predicted_iou"]))
        return out

    return segment

"""Stock SAM 2 as the baseline of the comparisons, through Meta's own predictors (nothing of ours in the loop).

Why a module: ``SAM2ImagePredictor`` hard-codes the feature sizes of a 1024 px model and takes uint8/float RGB;
this wrapper fixes the sizes for any ``image_size`` (our 256 px test config too) and feeds it the same
normalised RGB our engine gives UnSAMv2 (``to_model_rgb``), so both models see identical pixels.
Models come from ``napari_granseg.load_model(path, kind="sam2", config=...)``. Imports sam2 only when called.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["Sam2Interactive", "sam2_whole_image"]


def _model_rgb(image: np.ndarray) -> np.ndarray:
    from napari_granseg.engine.normalize import to_model_rgb

    return to_model_rgb(image)


class Sam2Interactive:
    """``SAM2ImagePredictor`` with the evaluation loop's interface (``set_image``, ``predict``)."""

    def __init__(self, model: Any):
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.predictor = SAM2ImagePredictor(model)
        s = int(model.image_size)
        self.predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(_model_rgb(image))

    def predict(self, point_coords=None, point_labels=None, multimask_output: bool = False, mask_input=None,
                return_logits: bool = False, **kwargs: Any):
        if kwargs.get("granularity") is not None:
            raise ValueError("stock SAM 2 has no granularity input")
        return self.predictor.predict(point_coords=point_coords, point_labels=point_labels,
                                      multimask_output=multimask_output, mask_input=mask_input,
                                      return_logits=return_logits)


def sam2_whole_image(model: Any, points_per_side: int = 64, points_per_batch: int = 128,
                     pred_iou_thresh: float = 0.5, stability_score_thresh: float = 0.7,
                     mask_threshold: float = -1.0, use_m2m: bool = True) -> Callable[[np.ndarray], list]:
    """``(image) -> [(mask, predicted IoU), ...]`` from Meta's ``SAM2AutomaticMaskGenerator``.

    Defaults: UnSAMv2's whole-image evaluation settings (stability offset 0.7, box NMS 0.7, no crops,
    M2M refinement, logits > -1) with its laxer g >= 0.5 score thresholds.
    """
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    gen = SAM2AutomaticMaskGenerator(model, points_per_side=points_per_side, points_per_batch=points_per_batch,
                                     pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_score_thresh,
                                     stability_score_offset=0.7, mask_threshold=mask_threshold, box_nms_thresh=0.7,
                                     crop_n_layers=0, use_m2m=use_m2m, output_mode="binary_mask")
    s = int(model.image_size)
    gen.predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]

    def segment(image: np.ndarray) -> list:
        rgb = (np.clip(_model_rgb(image), 0, 1) * 255).round().astype(np.uint8)
        return [(r["segmentation"], float(r["predicted_iou"])) for r in gen.generate(rgb)]

    return segment

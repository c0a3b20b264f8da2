"""The whole-image proposals ``granseg-eval whole`` pools over granularities: the CLI's default generator
resolves to them, and they are exactly the engine's records at every g, scored by predicted IoU."""
from __future__ import annotations

import numpy as np
import torch

from granseg_training.evaluation import cli
from granseg_training.evaluation.segmenters import UPSTREAM_GRANULARITIES, eval_segmenter
from napari_granseg.engine.automatic import AutomaticSettings, generate
from napari_granseg.engine.interactive import GranularityPredictor
from napari_granseg.zoo import load_model


def test_default_generator_is_the_pooling_segmenter():
    assert cli._resolve(cli.DEFAULT_WHOLE_GENERATOR) is eval_segmenter
    assert UPSTREAM_GRANULARITIES == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def test_pools_the_engine_records_of_every_granularity(monkeypatch):
    torch.manual_seed(2)
    pred = GranularityPredictor(load_model(None, kind="unsamv2", config="granseg_tiny.yaml", device="cpu"))
    encoder_calls = []
    forward = pred.model.forward_image
    monkeypatch.setattr(pred.model, "forward_image", lambda x: (encoder_calls.append(1), forward(x))[1])
    image = np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)
    image[12:36, 12:36] = 220
    settings = AutomaticSettings(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                 box_nms_thresh=1.0, use_m2m=False)
    pooled = eval_segmenter(pred, (0.2, 0.9), settings=settings, precision="fp32")(image)
    expected = [r for g in (0.2, 0.9) for r in generate(pred, image, g, settings, precision="fp32")]
    assert len(pooled) == len(expected) == 18  # no filter, no suppression: one mask per click and g
    for (mask, score), rec in zip(pooled, expected):
        np.testing.assert_array_equal(mask, rec["segmentation"])
        assert score == rec["predicted_iou"]
    assert len(encoder_calls) == 1  # one image, every g from the cached embedding

"""The scripting API's ``scheduler=`` (gs.segment, gs.segment_everything) and ``gs.compute.open_predictor`` /
``open_fewshot(where=...)`` run on the worker and give what they give locally."""
from __future__ import annotations

import numpy as np

import napari_granseg as gs
import pytest

from napari_granseg.engine.protocols import FewShot, Predictor
from napari_granseg.remote.client.proxies import RemoteFewShotSegmenter, RemotePredictor


def test_api_calls_with_a_scheduler_match_local(cluster, scene, one_thread):
    addr = cluster.scheduler_address
    local = gs.load_model("unsamv2-demo", device="cpu")
    points = [scene.centers[0], scene.centers[1]]
    want = gs.segment(scene.image, points, granularity=1.0, model=local, precision="fp32")
    got = gs.segment(scene.image, points, granularity=1.0, model="unsamv2-demo", precision="fp32", scheduler=addr)
    assert got.max() == 2 and np.array_equal(got, want)
    want = gs.segment_everything(scene.image, 1.0, model=local, precision="fp32", points_per_side=8)
    got = gs.segment_everything(scene.image, 1.0, model="unsamv2-demo", precision="fp32", points_per_side=8,
                                scheduler=addr)
    assert np.array_equal(got, want)


def test_opened_where_a_scheduler_is_gives_remote_proxies(cluster, scene, one_thread):
    addr = cluster.scheduler_address
    with pytest.raises(TypeError, match=r"compute\.open_predictor\(model, where="):
        gs.GranularityPredictor("unsamv2-demo", precision="fp32", scheduler=addr)
    with pytest.raises(TypeError, match=r"compute\.open_fewshot\(model, where="):
        gs.FewShotSegmenter("sansa-demo", scheduler=addr)
    pred = gs.compute.open_predictor("unsamv2-demo", precision="fp32", where=addr)
    assert isinstance(pred, RemotePredictor) and isinstance(pred, Predictor)
    assert pred.image_size == 256 and pred.precision == "fp32" and not pred.is_cached(scene.image)
    pred.set_image(scene.image)
    (row, col) = scene.centers[0]
    masks, _, _ = pred.predict([[col, row]], [1], granularity=1.0)
    local = gs.GranularityPredictor(gs.load_model("unsamv2-demo", device="cpu"), precision="fp32")
    local.set_image(scene.image)
    assert np.array_equal(masks, local.predict([[col, row]], [1], granularity=1.0)[0])
    assert pred.is_cached(scene.image)  # the worker holds its embedding now
    fs = gs.compute.open_fewshot("sansa-demo", image_size=None, where=addr)
    assert isinstance(fs, RemoteFewShotSegmenter) and isinstance(fs, FewShot)

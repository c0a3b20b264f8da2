"""The scripting API's ``scheduler=``: gs.segment, gs.segment_everything, GranularityPredictor and
FewShotSegmenter run on the worker and give what they give locally."""
from __future__ import annotations

import numpy as np

import napari_granseg as gs
from napari_granseg.remote.proxies import RemoteFewShotSegmenter, RemotePredictor


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


def test_engine_classes_with_a_scheduler_are_remote_proxies(cluster, scene, one_thread):
    addr = cluster.scheduler_address
    pred = gs.GranularityPredictor("unsamv2-demo", precision="fp32", scheduler=addr)
    assert isinstance(pred, RemotePredictor)
    pred.set_image(scene.image)
    (row, col) = scene.centers[0]
    masks, _, _ = pred.predict([[col, row]], [1], granularity=1.0)
    local = gs.GranularityPredictor(gs.load_model("unsamv2-demo", device="cpu"), precision="fp32")
    local.set_image(scene.image)
    assert np.array_equal(masks, local.predict([[col, row]], [1], granularity=1.0)[0])
    fs = gs.FewShotSegmenter("sansa-demo", image_size=None, scheduler=addr)
    assert isinstance(fs, RemoteFewShotSegmenter)

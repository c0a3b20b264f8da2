"""One predictor shared by threads (console, widget worker, batch), and the API's predictor per model."""
from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest
import torch

import napari_granseg as gs
from napari_granseg import api
from napari_granseg.engine.interactive import GranularityPredictor
from napari_granseg.zoo import load_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model(None, kind="unsamv2", config="granseg_tiny.yaml", device="cpu")


def test_threads_sharing_a_predictor_get_their_own_images_results(model):
    images = [np.random.default_rng(s).integers(0, 255, (40, 40)).astype(np.uint8) for s in range(2)]
    pred = GranularityPredictor(model, precision="fp32", cache_size=2)
    expected = []
    for img in images:
        pred.set_image(img)
        expected.append(pred.predict([[20, 20]], [1], granularity=0.5, return_logits=True)[0])
    results: dict[int, list] = {0: [], 1: []}

    def worker(k):
        for _ in range(4):
            with pred.lock:  # set_image + predict as one step
                pred.set_image(images[k])
                results[k].append(pred.predict([[20, 20]], [1], granularity=0.5, return_logits=True)[0])

    threads = [threading.Thread(target=worker, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in (0, 1):
        assert len(results[k]) == 4
        for r in results[k]:
            np.testing.assert_array_equal(r, expected[k])


def test_predict_and_set_image_hold_the_lock(model):
    pred = GranularityPredictor(model, precision="fp32")
    pred.set_image(np.zeros((32, 32), np.uint8))
    held = []
    original = pred._decode

    def probe(*a, **k):
        got = []
        t = threading.Thread(target=lambda: got.append(pred.lock.acquire(blocking=False)))
        t.start()
        t.join()
        held.append(not got[0])
        return original(*a, **k)

    pred._decode = probe
    pred.predict([[5, 5]], [1], granularity=0.5)
    assert held == [True]


def test_the_api_keeps_one_predictor_per_model_and_precision_for_the_models_lifetime(model):
    a = gs.get_predictor(model)
    assert gs.get_predictor(model) is a and a.precision == "auto"
    b = gs.get_predictor(model, precision="fp32")
    assert b is not a and b.precision == "fp32"
    assert not hasattr(api, "_predictors")  # nothing keyed by object ids in the module
    torch.manual_seed(1)
    temp = load_model(None, kind="unsamv2", config="granseg_tiny.yaml", device="cpu")
    pred_ref = weakref.ref(gs.get_predictor(temp))
    temp_ref = weakref.ref(temp)
    del temp
    gc.collect()
    assert temp_ref() is None and pred_ref() is None  # the predictor and its embeddings went with the model

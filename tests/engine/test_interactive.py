"""GranularityPredictor mechanics: inputs microscopists have, the embedding cache, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_granseg.engine.interactive import GranularityPredictor, PromptError
from napari_granseg.engine.normalize import ImageShapeError, to_model_rgb
from napari_granseg.zoo import load_model

TINY = "granseg_tiny.yaml"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model(None, kind="unsamv2", config=TINY, device="cpu")


def test_uint16_percentile_normalisation_ignores_hot_pixels():
    img = np.full((64, 64), 300, np.uint16)
    img[20:40, 20:40] = 800
    img[0, 0] = 65535  # one hot pixel must not squash the cells to black
    rgb = to_model_rgb(img)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.float32
    assert rgb[30, 30, 0] == pytest.approx(1.0) and rgb[5, 5, 0] == pytest.approx(0.0)
    u8 = (np.arange(64 * 64) % 256).astype(np.uint8).reshape(64, 64)
    np.testing.assert_allclose(to_model_rgb(u8)[..., 1], u8 / 255.0, atol=1e-7)


def test_bad_images_raise_with_advice(model):
    pred = GranularityPredictor(model)
    with pytest.raises(ImageShapeError, match="one slice"):
        pred.set_image(np.zeros((3, 4, 64, 64)))
    with pytest.raises(ImageShapeError, match="too small"):
        pred.set_image(np.zeros((4, 4)))


def test_embedding_is_computed_once_per_image(model, monkeypatch):
    pred = GranularityPredictor(model)
    calls = []
    original = pred.model.forward_image
    monkeypatch.setattr(pred.model, "forward_image", lambda x: (calls.append(1), original(x))[1])
    img = np.random.default_rng(0).integers(0, 4000, (80, 90)).astype(np.uint16)
    pred.set_image(img)
    for g in (0.1, 0.4, 0.9):  # slider moves
        pred.predict([[10, 20]], [1], granularity=g)
    pred.predict([[10, 20], [50, 60]], [1, 0], granularity=0.4)  # another click
    pred.set_image(img.copy())  # same pixels again: cache hit
    assert len(calls) == 1 and pred.is_cached(img)
    pred.set_image(img + 1)
    assert len(calls) == 2


def test_disk_cache_survives_a_new_predictor(model, tmp_path, monkeypatch):
    img = np.random.default_rng(1).integers(0, 255, (64, 64, 3)).astype(np.uint8)
    a = GranularityPredictor(model, disk_cache_dir=tmp_path)
    a.set_image(img)
    ref = a.predict([[5, 5]], [1], granularity=0.3, return_logits=True)[0]
    b = GranularityPredictor(model, disk_cache_dir=tmp_path)
    monkeypatch.setattr(b.model, "forward_image", lambda x: (_ for _ in ()).throw(AssertionError("re-encoded")))
    b.set_image(img)
    np.testing.assert_array_equal(ref, b.predict([[5, 5]], [1], granularity=0.3, return_logits=True)[0])
    assert not list(tmp_path.glob("*.part"))


def test_prompt_errors(model):
    pred = GranularityPredictor(model)
    with pytest.raises(RuntimeError, match="set_image"):
        pred.predict([[1, 1]], [1], granularity=0.5)
    pred.set_image(np.zeros((50, 70), np.float32))
    with pytest.raises(ValueError, match=r"outside \[0.1, 1\]"):
        pred.predict([[1, 1]], [1], granularity=0.05)
    with pytest.raises(PromptError, match="outside the image of width 70 and height 50"):
        pred.predict([[69, 55]], [1], granularity=0.5)
    with pytest.raises(PromptError, match="one label"):
        pred.predict([[1, 1], [2, 2]], [1], granularity=0.5)
    masks, ious, low = pred.predict([[10, 10]], [1], granularity=[0.2, 0.8])
    assert masks.shape == (2, 50, 70) and masks.dtype == bool and ious.shape == (2,)
    assert low.shape == (2, 64, 64)  # tiny model: 256 px input -> 64 x 64 low-res logits


def test_stock_sam2_model_works_without_granularity():
    sam2 = load_model(None, kind="sam2", config=TINY)
    pred = GranularityPredictor(sam2)
    pred.set_image(np.zeros((64, 64), np.uint8))
    assert not pred.has_granularity
    masks, ious, _ = pred.predict([[10, 10]], [1])
    assert masks.shape == (1, 64, 64)
    three, ious3, low3 = pred.predict([[10, 10]], [1], multimask_output=True)
    assert three.shape == (3, 64, 64) and ious3.shape == (3,) and low3.shape == (3, 64, 64)
    with pytest.raises(ValueError, match="no granularity input"):
        pred.predict([[10, 10]], [1], granularity=0.5)


def test_large_image_is_decimated_for_the_encoder_and_mask_is_full_size(model):
    pred = GranularityPredictor(model)
    big = np.zeros((3000, 2000), np.uint16)
    big[1000:2000, 500:1500] = 5000
    pred.set_image(big)
    masks, _, _ = pred.predict([[1000, 1500]], [1], granularity=0.5)
    assert masks.shape == (1, 3000, 2000)


def test_model_input_matches_sam2_preprocessing_for_8bit_rgb(model):
    """Our on-device preprocessing equals sam2's own transforms for the images sam2 was made for."""
    pred = GranularityPredictor(model)
    rgb = np.random.default_rng(5).integers(0, 256, (70, 90, 3)).astype(np.uint8)
    ours = pred._model_input(rgb)
    stock = pred._transforms(rgb)[None]
    assert ours.shape == stock.shape == (1, 3, 256, 256)
    assert torch.allclose(ours, stock, atol=1e-5)

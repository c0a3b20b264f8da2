"""The embedding disk cache: reused by a new process, bounded, self-healing, never in the way."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from napari_granseg.checkpoints import save_checkpoint
from napari_granseg.engine.embeddings import EmbeddingCache
from napari_granseg.engine.interactive import GranularityPredictor
from napari_granseg.models.unsamv2 import unsamv2_state_dict
from napari_granseg.zoo import load_model

TINY = "granseg_tiny.yaml"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(3)
    model = load_model(None, kind="unsamv2", config=TINY, device="cpu")
    return save_checkpoint(unsamv2_state_dict(model.module), tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_model(checkpoint, kind="unsamv2", config=TINY, device="cpu")


def _image(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (40, 40)).astype(np.uint8)


def _count_encodes(pred, monkeypatch):
    calls = []
    original = pred.model.forward_image
    monkeypatch.setattr(pred.model, "forward_image", lambda x: (calls.append(1), original(x))[1])
    return calls


def test_a_new_process_loading_the_same_checkpoint_reuses_the_entries(checkpoint, model, tmp_path, monkeypatch):
    first = GranularityPredictor(model, precision="fp32", disk_cache_dir=tmp_path)
    first.set_image(_image())
    ref = first.predict([[5, 5]], [1], granularity=0.4, return_logits=True)[0]
    # what a new process does: build the model again from the checkpoint (a different module object)
    again = load_model(checkpoint, kind="unsamv2", config=TINY, device="cpu")
    assert again.module is not model.module
    second = GranularityPredictor(again, precision="fp32", disk_cache_dir=tmp_path)
    calls = _count_encodes(second, monkeypatch)
    second.set_image(_image())
    assert calls == [] and second.cache.hits == 1
    np.testing.assert_array_equal(ref, second.predict([[5, 5]], [1], granularity=0.4, return_logits=True)[0])
    # other weights (another seed) never see these entries
    torch.manual_seed(4)
    other = GranularityPredictor(load_model(None, kind="unsamv2", config=TINY, device="cpu"), precision="fp32",
                                 disk_cache_dir=tmp_path)
    assert not other.is_cached(_image())


def test_the_intensity_range_is_part_of_the_key(model, tmp_path):
    pred = GranularityPredictor(model, precision="fp32", disk_cache_dir=tmp_path)
    img = np.random.default_rng(5).integers(100, 900, (40, 40)).astype(np.uint16)
    pred.set_image(img)
    assert pred.is_cached(img) and not pred.is_cached(img, intensity=(0, 4095))
    own = pred._features["image_embed"].clone()
    pred.set_image(img, intensity=(0, 4095))
    assert pred.current_intensity == (0.0, 4095.0)
    assert not torch.equal(own, pred._features["image_embed"])
    with pytest.raises(ValueError, match="intensity='auto': give the \\(low, high\\) grey values"):
        pred.set_image(img, intensity="auto")


def test_disk_size_is_bounded_least_recently_used_out(tmp_path):
    entry = {"image_embed": torch.zeros(1, 4, 32, 32), "high_res_feats": [torch.zeros(1, 2, 8, 8)]}
    cache = EmbeddingCache(1, tmp_path, max_bytes=0)
    cache.put("a" * 40, entry)
    size = (tmp_path / f"{'a' * 40}.pt").stat().st_size
    cache.max_bytes = int(2.5 * size)
    user_file = tmp_path / "notes.txt"  # not ours: never deleted
    user_file.write_text("keep me")
    cache.put("b" * 40, entry)
    old = os.stat(tmp_path / f"{'a' * 40}.pt").st_mtime - 100
    os.utime(tmp_path / f"{'a' * 40}.pt", (old, old))
    os.utime(tmp_path / f"{'b' * 40}.pt", (old + 1, old + 1))
    cache.clear()
    assert cache.get("a" * 40) is not None  # a read makes "a" the most recently used
    cache.put("c" * 40, entry)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"{'a' * 40}.pt", f"{'c' * 40}.pt", "notes.txt"]
    assert user_file.read_text() == "keep me"


def test_an_entry_that_does_not_load_is_removed_and_recomputed(model, tmp_path, monkeypatch):
    pred = GranularityPredictor(model, precision="fp32", disk_cache_dir=tmp_path)
    pred.set_image(_image(1))
    (entry,) = tmp_path.glob("*.pt")
    good = entry.read_bytes()
    for damage in (good[: len(good) // 2], b"<html>not a tensor file</html>"):
        entry.write_bytes(damage)
        fresh = GranularityPredictor(model, precision="fp32", disk_cache_dir=tmp_path)
        calls = _count_encodes(fresh, monkeypatch)
        fresh.set_image(_image(1))
        assert calls == [1]
        assert entry.read_bytes() != damage and len(list(tmp_path.glob("*.pt"))) == 1
    torch.save({"something": "else"}, entry)  # loads, but is not an embedding
    fresh = GranularityPredictor(model, precision="fp32", disk_cache_dir=tmp_path)
    calls = _count_encodes(fresh, monkeypatch)
    fresh.set_image(_image(1))
    assert calls == [1]


def test_an_unusable_cache_folder_warns_once_and_segmentation_goes_on(model, tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a user's file where the cache folder should be")
    with pytest.warns(RuntimeWarning, match="embedding cache folder .*cache cannot be used"):
        pred = GranularityPredictor(model, precision="fp32", disk_cache_dir=blocker)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        pred.set_image(_image(2))
        masks, _, _ = pred.predict([[5, 5]], [1], granularity=0.5)
    assert masks.shape == (1, 40, 40)
    assert blocker.read_text() == "a user's file where the cache folder should be"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_a_read_only_cache_folder_warns_and_segmentation_goes_on(model, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.warns(RuntimeWarning, match="cannot be used"):
            pred = GranularityPredictor(model, precision="fp32", disk_cache_dir=folder)
        pred.set_image(_image(3))
        assert pred.predict([[5, 5]], [1], granularity=0.5)[0].shape == (1, 40, 40)
    finally:
        folder.chmod(0o700)


def test_a_write_that_fails_later_warns_and_segmentation_goes_on(model, tmp_path, monkeypatch):
    pred = GranularityPredictor(model, precision="fp32", disk_cache_dir=tmp_path)

    def full_disk(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.warns(RuntimeWarning, match="No space left on device"):
        pred.set_image(_image(4))
    assert pred.cache.disk_dir is None and pred.predict([[5, 5]], [1], granularity=0.5)[0].shape == (1, 40, 40)
    assert not list(tmp_path.iterdir())

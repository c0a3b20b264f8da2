"""gs.finetune on a domain the demo model never saw: it learns (held-back and unseen objects), its checkpoint reads
back with identical outputs, caches follow the new weights, and bad input or Cancel writes nothing."""
from __future__ import annotations

import numpy as np
import pytest

import napari_granseg as gs
from napari_granseg.finetuning.data import FinetuneInputError
from napari_granseg.finetuning.score import click_iou
from napari_granseg.finetuning.trainer import FinetuneCancelled


def _objects(labels):
    return [(i, int(k)) for i, lab in enumerate(labels) for k in np.unique(lab[lab > 0])]


def test_finetuning_raises_click_iou_on_unseen_images(finetuned, demo_model, blob_data):
    model, _, seen = finetuned
    _, (images, labels) = blob_data
    before = click_iou(demo_model, images, labels, _objects(labels), 1.0)
    after = click_iou(model, images, labels, _objects(labels), 1.0)
    assert after >= before + 0.2, (before, after)
    rec = model.info["finetune"]
    assert rec["held_back_iou_after"] > rec["held_back_iou_before"] + 0.1, rec
    assert rec["objects_held_back"] >= 1 and rec["objects_trained"] >= 2
    steps = [s for s, *_ in seen]
    assert steps == list(range(1, rec["steps"] + 1)) and all(np.isfinite(loss) for _, _, loss, _ in seen)
    assert seen[-1][3] == 0  # no time left at the last step


@pytest.mark.parametrize("kind", [None, "unsamv2"])
def test_checkpoint_reads_back_with_identical_outputs(finetuned, blob_data, kind):
    model, out, _ = finetuned
    loaded = gs.load_model(out, kind=kind, device="cpu")
    assert loaded.kind == "unsamv2" and loaded.config == model.config
    ours, theirs = model.module.state_dict(), loaded.module.state_dict()
    assert ours.keys() == theirs.keys() and all(torch_equal(ours[k], theirs[k]) for k in ours)
    _, (images, _) = blob_data
    for precision in ("fp32", "auto"):
        a = gs.GranularityPredictor(model, precision=precision)
        b = gs.GranularityPredictor(loaded, precision=precision)
        a.set_image(images[0])
        b.set_image(images[0])
        la, ia, _ = a.predict([[40, 30], [70, 60]], [1, 0], granularity=[0.4, 1.0], return_logits=True)
        lb, ib, _ = b.predict([[40, 30], [70, 60]], [1, 0], granularity=[0.4, 1.0], return_logits=True)
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(ia, ib)


def torch_equal(a, b) -> bool:
    import torch

    return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))


def test_checkpoint_keeps_the_upstream_layout(finetuned):
    from napari_granseg.checkpoints import read_state_dict

    state = read_state_dict(finetuned[1])
    lora = [k for k in state if k.endswith(".lora_A")]
    assert len(lora) == 28 and all(k.startswith("sam_mask_decoder.transformer.") for k in lora)
    assert any(k.endswith(".original_layer.weight") for k in state)
    assert any(float(state[k].abs().max()) > 0 for k in state if k.endswith(".lora_B"))  # trained


def test_embedding_cache_never_serves_the_base_models_entries(finetuned, demo_model, blob_data, tmp_path):
    from napari_granseg.engine.embeddings import model_fingerprint

    model = finetuned[0]
    assert model_fingerprint(model.module) != model_fingerprint(demo_model.module)
    _, (images, _) = blob_data
    base = gs.GranularityPredictor(demo_model, disk_cache_dir=tmp_path)
    base.set_image(images[1])
    assert base.is_cached(images[1])
    assert not gs.GranularityPredictor(model, disk_cache_dir=tmp_path).is_cached(images[1])


def _scene(n=2, seed=7):
    from napari_granseg.synthetic_domains import dark_blobs_scene

    return dark_blobs_scene(size=64, n_objects=n, seed=seed)


@pytest.mark.parametrize("case, message", [
    ("shape", "must have its image's height and width"),
    ("empty", "hold no objects"),
    ("few", "at least 3"),
    ("count", "label images"),
])
def test_bad_input_is_refused_and_nothing_is_written(demo_model, tmp_path, case, message):
    (img, lab), (img2, lab2) = _scene(), _scene(seed=8)
    images, labels = [img, img2], [lab, lab2]
    if case == "shape":
        labels[1] = lab2[:-3]
    elif case == "empty":
        labels[1] = np.zeros_like(lab2)
    elif case == "few":
        images, labels = [img], [np.where(lab == 1, 1, 0)]
    elif case == "count":
        labels = labels[:1]
    out = tmp_path / "m.pt"
    with pytest.raises(FinetuneInputError, match=message):
        gs.finetune(images, labels, model=demo_model, out=out, steps=2)
    assert list(tmp_path.iterdir()) == []


def test_a_model_of_another_kind_is_refused(ft_cache, tmp_path):
    (img, lab), (img2, lab2) = _scene(), _scene(seed=8)
    with pytest.raises(ValueError, match="needs an UnSAMv2 model"):
        gs.finetune([img, img2], [lab, lab2], model="sansa-demo", out=tmp_path / "m.pt", steps=2)
    assert list(tmp_path.iterdir()) == []


def test_a_foreign_out_file_is_never_replaced(demo_model, tmp_path):
    (img, lab), (img2, lab2) = _scene(), _scene(seed=8)
    out = tmp_path / "mine.pt"
    out.write_bytes(b"a person's own file")
    with pytest.raises(FileExistsError, match="not replaced"):
        gs.finetune([img, img2], [lab, lab2], model=demo_model, out=out, steps=2)
    assert out.read_bytes() == b"a person's own file"


def test_cancel_leaves_no_file(demo_model, tmp_path):
    (img, lab), (img2, lab2) = _scene(), _scene(seed=8)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(FinetuneCancelled):
        gs.finetune([img, img2], [lab, lab2], model=demo_model, out=tmp_path / "m.pt", steps=50, cancel=cancel)
    assert list(tmp_path.iterdir()) == [] and len(calls) == 3


def test_a_model_trained_in_place_is_never_served_its_old_embeddings(demo_model, blob_data, tmp_path):
    """A predictor held across training of its own model (a notebook that trains and tries in turn): the weights'
    change shows in the cache key, so the next set_image encodes again with the new weights."""
    import copy

    import torch

    from napari_granseg.engine.embeddings import model_fingerprint

    model = copy.deepcopy(demo_model.module)
    _, (images, _) = blob_data
    pred = gs.GranularityPredictor(model, precision="fp32", disk_cache_dir=tmp_path)
    pred.set_image(images[0])
    before = pred._features["image_embed"].clone()
    fingerprint = model_fingerprint(model)
    assert pred.is_cached(images[0]) and model_fingerprint(model) == fingerprint  # inference changes nothing
    optimizer = torch.optim.SGD(model.image_encoder.parameters(), lr=0.1)
    model.image_encoder(torch.randn(1, 3, 256, 256))["vision_features"].sum().backward()
    optimizer.step()
    assert model_fingerprint(model) != fingerprint
    assert not pred.is_cached(images[0])
    pred.set_image(images[0])
    assert not torch.equal(pred._features["image_embed"], before)

"""FewShotSegmenter: reused reference memory == fresh per-target episode, prompts, multi-class, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from granseg_training.sansa.episodes import segment_episode_reference
from napari_granseg.engine.fewshot import FewShotError, FewShotSegmenter
from napari_granseg.engine.fewshot_input import preprocess_image, preprocess_mask
from napari_granseg.engine.normalize import ImageShapeError
from napari_granseg.models.loaded import LoadedModel
from napari_granseg.models.sansa import build_sansa_model
from napari_granseg.synthetic import shapes_scene


@pytest.fixture(scope="module")
def random_sansa():
    """Tiny random SANSA with non-zero adapters (so they take part in every output)."""
    torch.manual_seed(0)
    m = build_sansa_model("granseg_tiny.yaml")
    with torch.no_grad():
        for a in m.adapters().values():
            a.up_proj.weight.normal_(0, 0.5)
    return LoadedModel(kind="sansa", name="random", module=m, device=torch.device("cpu"), config="granseg_tiny.yaml")


@pytest.fixture(scope="module")
def scenes():
    return [shapes_scene(size=96, n_objects=3, seed=s) for s in range(6)]


@pytest.mark.parametrize("k", [1, 3])
def test_reused_memory_equals_fresh_episode(random_sansa, scenes, k):
    fs = FewShotSegmenter(random_sansa, image_size=640, precision="fp32")
    prompts = [dict(mask=scenes[0][1] == 1), dict(points=[[10, 20], [40, 30]]), dict(box=[5, 5, 60, 70])]
    for (img, _), p in zip(scenes[:k], prompts[:k]):
        fs.add_reference(img, **p)
    for img, _ in scenes[3:]:
        fast = fs.segment(img)
        slow = segment_episode_reference(fs, img)
        assert np.array_equal(fast.logits, slow.logits)
        assert np.array_equal(fast.mask, slow.mask)
        batched = segment_episode_reference(fs, img, batch_backbone=True)  # upstream: one encoder batch
        assert np.abs(batched.logits - fast.logits).max() < 1e-4
        assert fast.logits.shape == (64, 64) and fast.logits.dtype == np.float32
        assert fast.mask.shape == img.shape and fast.probability.shape == img.shape
        assert np.array_equal(fast.mask, fast.probability > 0.5)
    # the memory is built once: outputs do not depend on how many targets ran before
    again = list(fs.segment_many([s[0] for s in scenes[3:]]))
    assert all(np.array_equal(a.logits, fs.segment(s[0]).logits) for a, s in zip(again, scenes[3:]))


def test_bf16_autocast_path_is_consistent(random_sansa, scenes):
    """precision="bf16" keeps reuse == fresh episode and really differs from "fp32"."""
    full = FewShotSegmenter(random_sansa, image_size=None, precision="fp32")
    half = FewShotSegmenter(random_sansa, image_size=None, precision="bf16")
    for fs in (full, half):
        fs.add_reference(scenes[0][0], mask=scenes[0][1] == 1)
    img = scenes[4][0]
    a, b = full.segment(img), half.segment(img)
    assert not torch.is_autocast_cpu_enabled()
    assert np.array_equal(b.logits, segment_episode_reference(half, img).logits)
    assert np.array_equal(a.logits, segment_episode_reference(full, img).logits)
    assert not np.array_equal(a.logits, b.logits)  # autocast really ran in bfloat16


def test_bf16_masks_match_float32_masks_of_a_trained_model(trained_sansa):
    full = FewShotSegmenter(trained_sansa, image_size=None, precision="fp32")
    half = FewShotSegmenter(trained_sansa, image_size=None, precision="bf16")
    ref, ref_labels = shapes_scene(size=128, n_objects=3, seed=500)
    for fs in (full, half):
        fs.add_reference(ref, mask=ref_labels == 1)
    ious = []
    for seed in (501, 502, 503):
        img, _ = shapes_scene(size=128, n_objects=3, seed=seed)
        a, b = full.segment(img).mask, half.segment(img).mask
        ious.append((a & b).sum() / max(1, (a | b).sum()))
    assert np.mean(ious) > 0.9, ious


def test_memory_roles_and_reference_order_matter(random_sansa, scenes):
    fs = FewShotSegmenter(random_sansa, image_size=None)
    fs.add_reference(scenes[0][0], mask=scenes[0][1] == 1)
    fs.add_reference(scenes[1][0], mask=scenes[1][1] == 1)
    mem = fs.memory()
    assert list(mem["cond_frame_outputs"]) == [0] and list(mem["non_cond_frame_outputs"]) == [1]
    a = fs.segment(scenes[4][0]).logits
    fs.clear_references()
    fs.add_reference(scenes[1][0], mask=scenes[1][1] == 1)
    fs.add_reference(scenes[0][0], mask=scenes[0][1] == 1)
    assert not np.array_equal(a, fs.segment(scenes[4][0]).logits)
    # target step uses multimask output (no prompt, multimask_max_pt_num = 0)
    assert random_sansa.module.sam._use_multimask(False, None)
    assert not random_sansa.module.sam._use_multimask(True, {"point_labels": torch.ones(1, 1)})


def test_segment_many_progress_and_cancel(random_sansa, scenes):
    fs = FewShotSegmenter(random_sansa.module, image_size=None)  # a bare SansaModel works too
    fs.add_reference(scenes[0][0], mask=scenes[0][1] > 0)
    seen = []
    results = list(fs.segment_many([s[0] for s in scenes[1:]], progress=lambda d, t: seen.append((d, t))))
    assert len(results) == 5 and seen[-1] == (5, 5)
    calls = iter(range(100))
    cut = list(fs.segment_many([s[0] for s in scenes[1:]], cancel=lambda: next(calls) >= 2))
    assert len(cut) == 2


def test_segment_classes_matches_single_class_runs(random_sansa, scenes):
    refs = scenes[:2]
    fs = FewShotSegmenter(random_sansa, image_size=None)
    out = fs.segment_classes([s[0] for s in scenes[3:5]], [r[1] for r in refs], [r[0] for r in refs])
    probs = {}
    for c in (1, 2):
        single = FewShotSegmenter(random_sansa, image_size=None)
        for img, lab in refs:
            single.add_reference(img, mask=lab == c)
        probs[c] = [single.segment(s[0]).probability for s in scenes[3:5]]
    for t, lab in enumerate(out):
        p1, p2 = probs[1][t], probs[2][t]
        expected = np.where(np.maximum(p1, p2) > 0.5, np.where(p2 > p1, 2, 1), 0)
        assert lab.dtype == np.int32 and np.array_equal(lab, expected)
    # default reference images: the ones added with add_reference
    fs.add_reference(refs[0][0], mask=refs[0][1] > 0)
    fs.add_reference(refs[1][0], mask=refs[1][1] > 0)
    again = fs.segment_classes([s[0] for s in scenes[3:5]], [r[1] for r in refs])
    assert all(np.array_equal(a, b) for a, b in zip(again, out))


def test_preprocessing_follows_upstream():
    rgb = np.random.default_rng(0).random((50, 70, 3)).astype(np.float32)
    t = preprocess_image(rgb, 256, 640, intensity=(0.0, 1.0))
    assert t.shape == (1, 3, 256, 256)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    flat = np.full((40, 40, 3), 0.5, np.float32)
    assert torch.allclose(preprocess_image(flat, 256, 640, intensity=(0.0, 1.0)), ((0.5 - mean) / std).expand(1, 3, 256, 256), atol=1e-5)
    m = np.zeros((100, 100), bool)
    m[10:20, 30:60] = True
    pm = preprocess_mask(m, 256)
    assert pm.dtype == torch.bool and pm.shape == (1, 1, 256, 256)
    rows, cols = np.nonzero(pm[0, 0].numpy())
    # antialiased bilinear then > 0: the box grows by at most ~1 source pixel (2.56 model px) on each side
    assert 23 <= rows.min() <= 26 and 49 <= rows.max() <= 53 and 74 <= cols.min() <= 77 and 151 <= cols.max() <= 155


def test_16bit_and_rgb_inputs(random_sansa, scenes):
    fs = FewShotSegmenter(random_sansa, image_size=None)
    img16, lab = scenes[0]
    fs.add_reference(img16, mask=lab == 1)
    rgb8 = np.repeat((img16 / 256).astype(np.uint8)[..., None], 3, axis=-1)
    r = fs.segment(rgb8)
    assert r.mask.shape == img16.shape
    ranged = FewShotSegmenter(random_sansa, image_size=None, intensity_range=(0.0, 65535.0))
    ranged.add_reference(img16, mask=lab == 1)
    assert not np.array_equal(ranged.segment(img16).logits, fs.segment(img16).logits)


def test_clear_errors(random_sansa, scenes):
    fs = FewShotSegmenter(random_sansa)
    img, lab = scenes[0]
    with pytest.raises(FewShotError, match="no reference added"):
        fs.segment(img)
    with pytest.raises(FewShotError, match="reference mask is empty"):
        fs.add_reference(img, mask=np.zeros_like(lab))
    with pytest.raises(FewShotError, match="differs from its image"):
        fs.add_reference(img, mask=lab[:50] == 1)
    with pytest.raises(FewShotError, match="needs a prompt"):
        fs.add_reference(img)
    with pytest.raises(FewShotError, match="not both"):
        fs.add_reference(img, mask=lab == 1, points=[[3, 3]])
    with pytest.raises(FewShotError, match=r"\[x0, y0, x1, y1\]"):
        fs.add_reference(img, box=[10, 10, 5, 20])
    with pytest.raises(FewShotError, match="inside the"):
        fs.add_reference(img, points=[[500, 3]])
    with pytest.raises(ImageShapeError, match="one 2D image"):
        fs.add_reference(np.zeros((3, 4, 64, 64)), mask=np.ones((64, 64)))
    fs.add_reference(img, mask=lab == 1)
    with pytest.raises(ImageShapeError):
        fs.segment(np.zeros((5, 64, 64, 2)))
    with pytest.raises(TypeError, match="SANSA model"):
        FewShotSegmenter(torch.nn.Linear(2, 2))
    with pytest.raises(FewShotError, match="empty"):
        fs.segment_classes([img], [np.zeros_like(lab)], [img])

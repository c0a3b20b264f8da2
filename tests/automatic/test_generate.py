"""Whole-image generator mechanics: same masks as sam2's SAM2AutomaticMaskGenerator at equal settings,
settings presets, progress/cancel, embedding reuse, painting order, stacks."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_granseg.engine.automatic import (AutomaticSettings, Cancelled, generate, records_to_labels,
                                             segment_everything, segment_everything_stack)
from napari_granseg.engine.automatic.postprocess import remove_small_regions
from napari_granseg.engine.interactive import GranularityPredictor
from napari_granseg.synthetic import nested_cells_scene
from napari_granseg.zoo import load_model

TINY = "granseg_tiny.yaml"


@pytest.fixture(scope="module")
def stock():
    torch.manual_seed(0)
    return load_model(None, kind="sam2", config=TINY, device="cpu")


@pytest.fixture(scope="module")
def unsam():
    torch.manual_seed(1)
    return load_model(None, kind="unsamv2", config=TINY, device="cpu")


@pytest.fixture(scope="module")
def rgb8():
    scene = nested_cells_scene(size=96, n_cells=2, seed=3)
    img8 = (np.clip(scene.image / np.percentile(scene.image, 99.5), 0, 1) * 255).astype(np.uint8)
    return np.repeat(img8[..., None], 3, axis=-1)


def _sam2_generator(model, pred, **kw):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    gen = SAM2AutomaticMaskGenerator(model.module, **kw)
    gen.predictor._bb_feat_sizes = pred._bb_feat_sizes  # sam2 hard-codes 1024 px feature sizes
    return gen


@pytest.mark.parametrize("use_m2m", [False, True])
def test_same_masks_as_sam2_generator(stock, rgb8, use_m2m):
    pred = GranularityPredictor(stock, precision="fp32")
    # thresholds at the medians of an unfiltered run, so that both filters really remove masks
    base = dict(points_per_side=6, points_per_batch=10, mask_threshold=0.0, stability_score_offset=0.7,
                box_nms_thresh=0.9, use_m2m=use_m2m)
    raw = generate(pred, rgb8, None, AutomaticSettings(**base, pred_iou_thresh=0.0, stability_score_thresh=0.0),
                   precision="fp32")
    kw = dict(base, pred_iou_thresh=float(np.median([r["predicted_iou"] for r in raw])) - 1e-6,
              stability_score_thresh=float(np.median([r["stability_score"] for r in raw])))
    ref = _sam2_generator(stock, pred, **kw).generate(rgb8)
    ours = generate(pred, rgb8, None, AutomaticSettings(**kw), precision="fp32")
    assert 0 < len(ours) < len(raw)
    assert len(ours) == len(ref)
    for a, b in zip(ref, ours):
        np.testing.assert_array_equal(a["segmentation"], b["segmentation"])
        assert a["area"] == b["area"] and a["bbox"] == b["bbox"] and a["point_coords"] == b["point_coords"]
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=0)
        assert a["stability_score"] == pytest.approx(b["stability_score"], abs=0)


def test_settings_presets_and_errors(stock, unsam, rgb8):
    gpu = AutomaticSettings.for_device("cuda", 0.3)
    assert (gpu.points_per_side, gpu.points_per_batch, gpu.mask_threshold, gpu.stability_score_offset,
            gpu.box_nms_thresh, gpu.crop_n_layers, gpu.use_m2m) == (64, 128, -1.0, 0.7, 0.7, 0, True)
    assert (gpu.pred_iou_thresh, gpu.stability_score_thresh) == (0.65, 0.7)
    high = AutomaticSettings.for_device("cuda", 0.5)
    assert (high.pred_iou_thresh, high.stability_score_thresh) == (0.5, 0.7)
    cpu = AutomaticSettings.for_device("cpu", 0.8)
    assert 16 <= cpu.points_per_side <= 24 and cpu.pred_iou_thresh == 0.5
    with pytest.raises(TypeError, match="valid settings"):
        cpu.updated(points_per_sid=3)
    with pytest.raises(ValueError, match="granularity=None"):
        segment_everything(GranularityPredictor(stock), rgb8, 0.5)
    with pytest.raises(ValueError, match=r"outside \[0.1, 1\]"):
        segment_everything(GranularityPredictor(unsam), rgb8, 1.5)
    with pytest.raises(ValueError, match="points_per_side"):
        segment_everything(GranularityPredictor(unsam), rgb8, 0.5, points_per_side=None)


def test_progress_cancel_and_embedding_reuse(unsam, rgb8, monkeypatch):
    pred = GranularityPredictor(unsam)
    calls = []
    original = pred.model.forward_image
    monkeypatch.setattr(pred.model, "forward_image", lambda x: (calls.append(1), original(x))[1])
    seen = []
    segment_everything(pred, rgb8, 0.3, progress=lambda d, t: seen.append((d, t)), points_per_side=5,
                       points_per_batch=10)
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)  # 25 points in batches of 10
    segment_everything(pred, rgb8, 0.9, points_per_side=5)  # another g: no second encoder pass
    assert len(calls) == 1
    done = []

    def cancel():
        return len(done) >= 1

    with pytest.raises(Cancelled):
        segment_everything(pred, rgb8, 0.3, progress=lambda d, t: done.append(d) if d else None, cancel=cancel,
                           points_per_side=5, points_per_batch=5)
    assert len(done) == 1


def test_granularity_path_gives_one_mask_per_point_and_labels(unsam, rgb8):
    pred = GranularityPredictor(unsam)
    s = AutomaticSettings(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0,
                          use_m2m=False)
    recs = generate(pred, rgb8, 0.4, s)
    assert len(recs) == 16  # no filtering, no suppression: one mask per grid point (not SAM's 3)
    labels, info = segment_everything(pred, rgb8, 0.4, settings=s, return_info=True)
    assert labels.dtype == np.int32 and labels.shape == rgb8.shape[:2]
    assert len(info) == labels.max() and set(np.unique(labels)) - {0} == set(range(1, labels.max() + 1))


def test_records_to_labels_paints_large_first():
    big = np.zeros((20, 20), bool)
    big[2:18, 2:18] = True
    small = np.zeros((20, 20), bool)
    small[8:12, 8:12] = True
    hidden = small.copy()  # identical to small but listed first: fully covered -> dropped
    recs = [{"segmentation": small, "area": 16}, {"segmentation": big, "area": 256},
            {"segmentation": hidden, "area": 16}]
    labels, index = records_to_labels(recs, (20, 20))
    assert labels.max() == 2 and labels[10, 10] == 2 and labels[3, 3] == 1
    assert index == [1, 2]  # label 1 = big, label 2 = the later of the two equal small masks


def test_small_region_cleanup_matches_sam_semantics():
    m = np.zeros((30, 30), bool)
    m[5:25, 5:25] = True
    m[10, 10] = False  # a 1-pixel hole
    m[0, 28] = True  # a 1-pixel island
    filled, changed = remove_small_regions(m, 4, "holes")
    assert changed and filled[10, 10]
    cleaned, changed = remove_small_regions(filled, 4, "islands")
    assert changed and not cleaned[0, 28] and cleaned.sum() == 400


def test_stack_ids_are_unique_across_slices(unsam, rgb8):
    pred = GranularityPredictor(unsam)
    stack = np.stack([rgb8[..., 0], np.flipud(rgb8[..., 0])])
    s = AutomaticSettings(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0, use_m2m=False)
    seen = []
    out = segment_everything_stack(pred, stack, 0.5, settings=s, progress=lambda d, t: seen.append((d, t)))
    assert out.shape == stack.shape and out.dtype == np.int32
    # one batch of 9 clicks per slice: the stack's progress counts 2 batches and ends at 100 %
    assert {t for _, t in seen} == {2} and seen[-1] == (2, 2)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    ids0, ids1 = set(np.unique(out[0])) - {0}, set(np.unique(out[1])) - {0}
    assert ids0 and ids1 and not ids0 & ids1


class _RecordingLock:
    """Stands for the predictor's re-entrant lock; records how deep it is held."""

    def __init__(self):
        self.depth = 0

    def __enter__(self):
        self.depth += 1

    def __exit__(self, *exc):
        self.depth -= 1


def test_every_model_call_runs_under_the_lock_in_the_chosen_precision(unsam, rgb8, monkeypatch):
    pred = GranularityPredictor(unsam)
    pred.lock, pred.precision = _RecordingLock(), "auto"
    calls = []
    set_image, decode = pred.set_image, pred._decode

    def record(name):
        calls.append((name, pred.lock.depth, pred.precision, torch.is_autocast_enabled("cpu"),
                      torch.get_autocast_dtype("cpu")))

    monkeypatch.setattr(pred, "set_image", lambda image, **kw: (record("set_image"), set_image(image, **kw))[1])
    monkeypatch.setattr(pred, "_decode", lambda *a: (record("decode"), decode(*a))[1])
    s = AutomaticSettings(points_per_side=3, points_per_batch=5, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    # "fp32" holds even inside a caller's bf16 autocast (a notebook, a trainer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fp32 = segment_everything(pred, rgb8, 0.4, settings=s, precision="fp32")
    assert [c[0] for c in calls] == ["set_image"] + ["decode"] * 4  # 2 click batches, each with M2M
    assert all(depth == 1 and prec == "fp32" and not autocast for _, depth, prec, autocast, _ in calls)
    assert pred.precision == "auto" and pred.lock.depth == 0  # the predictor's own setting is back
    calls.clear()
    bf16 = segment_everything(pred, rgb8, 0.4, settings=s, precision="bf16")
    assert all(depth == 1 and prec == "bf16" and autocast and dtype == torch.bfloat16
               for _, depth, prec, autocast, dtype in calls)
    assert bf16.shape == fp32.shape and bf16.max() > 0 and fp32.max() > 0
    with pytest.raises(ValueError, match="precision='fp16'"):
        segment_everything(pred, rgb8, 0.4, settings=s, precision="fp16")
    assert pred.precision == "auto" and pred.lock.depth == 0


def test_crops_progress_reaches_total_and_event_cancels(unsam, rgb8):
    pred = GranularityPredictor(unsam)
    # 1 full image + 4 crops, 4 clicks each in batches of 2: 10 decoder batches
    s = AutomaticSettings(points_per_side=2, points_per_batch=2, crop_n_layers=1, pred_iou_thresh=0.0,
                          stability_score_thresh=0.0, use_m2m=False)
    seen = []
    records = generate(pred, rgb8, 0.5, s, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(k, 10) for k in range(11)]
    assert records and all(r["segmentation"].shape == rgb8.shape[:2] for r in records)
    stop = threading.Event()

    def progress(done, total):
        if done == 3:
            stop.set()

    seen.clear()
    with pytest.raises(Cancelled):
        generate(pred, rgb8, 0.5, s, progress=lambda d, t: (seen.append(d), progress(d, t)), cancel=stop)
    assert seen[-1] == 3

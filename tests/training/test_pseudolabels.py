"""UnSAMv2 pseudo-labels (divide and conquer): formula, stages, COCO output, resume, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pycocotools")
from skimage import io as skio  # noqa: E402

from granseg_training.pseudolabels.cli import main as cli_main  # noqa: E402
from granseg_training.pseudolabels.coco import read_image_json, read_pseudolabels, write_image_json  # noqa: E402
from granseg_training.pseudolabels.conquer import conquer_instance, iterative_merge  # noqa: E402
from granseg_training.pseudolabels.divide import classify_proposals, divide_image, maskcut  # noqa: E402
from granseg_training.pseudolabels.features import ColorFeatures, make_extractor  # noqa: E402
from granseg_training.pseudolabels.granularity import granularity_by_instance, granularity_of_areas  # noqa: E402
from granseg_training.evaluation.metrics import iou as mask_iou  # noqa: E402
from granseg_training.pseudolabels.masks import PseudoMask  # noqa: E402
from granseg_training.pseudolabels.merge import merge_masks, protected_nms  # noqa: E402
from granseg_training.pseudolabels.pipeline import PseudoLabelConfig, pseudolabel_image, run_folder  # noqa: E402

BLUE, RED, DARK_RED = (0.1, 0.2, 0.8), (0.9, 0.1, 0.1), (0.5, 0.05, 0.05)
NATIVE = PseudoLabelConfig(divide_long_side=None, conquer_long_side=None, max_instances=3, max_ncut=0.5)


def box(shape, y0, y1, x0, x1):
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def two_tone_object(size=96):
    """Blue background with a 48x64 object: left half red, right half dark red (cosine ~0.54)."""
    img = np.empty((size, size, 3), np.float32)
    img[:] = BLUE
    img[24:72, 16:48] = RED
    img[24:72, 48:80] = DARK_RED
    return img


# ---------------------------------------------------------------- granularity

def test_granularity_hand_values():
    # sqrt areas 10, 5, 8 -> 1.0, 0.1, 0.1 + 0.9 * 3/5
    np.testing.assert_allclose(granularity_of_areas([100, 25, 64]), [1.0, 0.1, 0.64], atol=1e-6)
    np.testing.assert_allclose(granularity_of_areas([16, 400, 100, 256]),
                               [0.1, 1.0, 0.1 + 0.9 * 6 / 16, 0.1 + 0.9 * 12 / 16], atol=1e-6)
    np.testing.assert_allclose(granularity_of_areas([50]), [1.0])          # instance without parts
    np.testing.assert_allclose(granularity_of_areas([9, 9, 9]), [1.0, 0.5, 0.5])  # degenerate -> 0.5
    assert granularity_of_areas([]).shape == (0,)
    g = granularity_by_instance([0, 1, 0, 1], [100, 30, 25, 30])
    np.testing.assert_allclose(g, [1.0, 1.0, 0.1, 0.5], atol=1e-6)


# ---------------------------------------------------------------- divide

def test_maskcut_separates_two_regions():
    img = np.empty((96, 96, 3), np.float32)
    img[:] = BLUE
    img[24:72, 16:64] = RED
    ext = ColorFeatures(patch_size=8)
    feats = ext(img)
    assert feats.shape[:2] == (12, 12)
    first = maskcut(feats, max_instances=1)[0]
    np.testing.assert_array_equal(first, box((12, 12), 3, 9, 2, 8))
    masks = divide_image(img, ext, max_instances=1, long_side=None)
    assert mask_iou(masks[0], box((96, 96), 24, 72, 16, 64)) > 0.95
    # a uniform remainder is no real cut: with max_ncut the search stops after the object
    assert len(maskcut(feats, max_instances=3, max_ncut=0.5)) == 1


def test_maskcut_foreground_is_not_the_background_frame():
    # object touching no corner, background holding all four corners: the object must be chosen
    img = np.empty((64, 64, 3), np.float32)
    img[:] = RED
    img[16:40, 24:56] = BLUE
    first = maskcut(ColorFeatures()(img), max_instances=1)[0]
    np.testing.assert_array_equal(first, box((8, 8), 2, 5, 3, 7))


def test_classify_proposals_instances_and_parts():
    s = (100, 100)
    big = box(s, 0, 60, 0, 60)              # 36% -> instance
    part = box(s, 10, 30, 10, 30)           # inside big -> part
    mostly_in = box(s, 0, 60, 5, 65)        # 91.7% inside big -> part, not an instance
    tiny = box(s, 0, 5, 90, 95)             # < 5% and inside nothing -> dropped
    other = box(s, 70, 100, 60, 100)        # 12% -> second instance
    instances, parts = classify_proposals([part, big, tiny, mostly_in, other])
    assert instances == [1, 4]
    assert sorted(parts[1]) == [0, 3] and parts[4] == []


# ---------------------------------------------------------------- conquer

def test_conquer_finds_both_parts_and_the_whole():
    img = two_tone_object()
    inst = box((96, 96), 24, 72, 16, 80)
    parts = conquer_instance(img, inst, ColorFeatures(), long_side=None)
    assert len(parts) == 3
    assert mask_iou(parts[0], inst) > 0.95                                    # merged at threshold 0.5
    halves = sorted(parts[1:], key=lambda m: np.flatnonzero(m.any(0))[0])
    assert mask_iou(halves[0], box((96, 96), 24, 72, 16, 48)) > 0.95
    assert mask_iou(halves[1], box((96, 96), 24, 72, 48, 80)) > 0.95


def test_iterative_merge_levels():
    # 3 colour stripes on a 4x12 grid: red | orange (cos ~0.71) | blue
    img = np.empty((32, 96, 3), np.float32)
    img[:, :32], img[:, 32:64], img[:, 64:] = RED, (0.9, 0.4, 0.1), BLUE
    feats = ColorFeatures(position_weight=0.0)(img)
    clusters = iterative_merge(feats, min_patches=4)
    as_sets = {tuple(np.flatnonzero(c.any(0))) for c in clusters}
    assert as_sets == {tuple(range(0, 4)), tuple(range(4, 8)), tuple(range(8, 12)), tuple(range(0, 8))}


def test_conquer_keeps_only_clusters_inside_the_instance():
    # L-shaped red instance; its bounding box also holds a blue (background) quadrant
    img = np.empty((64, 64, 3), np.float32)
    img[:] = BLUE
    inst = box((64, 64), 8, 56, 8, 56) & ~box((64, 64), 32, 56, 32, 56)
    img[inst] = RED
    parts = conquer_instance(img, inst, ColorFeatures(), long_side=None)
    assert len(parts) == 1 and mask_iou(parts[0], inst) > 0.95


# ---------------------------------------------------------------- merge

def test_protected_nms_keeps_instance_over_near_duplicate():
    s = (64, 64)
    inst = PseudoMask(box(s, 8, 48, 8, 48), 0, is_part=False, is_divide=True, is_conquer=False)
    dup = PseudoMask(box(s, 8, 50, 8, 50), 0, is_part=True, is_divide=False, is_conquer=True)  # IoU .907
    dup_small = PseudoMask(box(s, 8, 46, 8, 46), 0, is_part=True, is_divide=False, is_conquer=True)
    half = PseudoMask(box(s, 8, 48, 8, 28), 0, is_part=True, is_divide=False, is_conquer=True)
    kept = protected_nms([dup, dup_small, half, inst], 0.8)
    assert kept[0] is inst and half in kept and dup not in kept and dup_small not in kept
    # divide parts win over conquer duplicates of equal size
    dpart = PseudoMask(box(s, 8, 48, 8, 29), 0, is_part=True, is_divide=True, is_conquer=False)
    kept = protected_nms([half, dpart, inst], 0.8)
    assert dpart in kept and half not in kept


def test_merge_drops_huge_masks_and_applies_refine():
    s = (32, 32)
    huge = PseudoMask(box(s, 0, 32, 0, 31), 0, is_part=False, is_divide=True, is_conquer=False)  # 96.9%
    part = PseudoMask(box(s, 0, 16, 0, 16), 0, is_part=True, is_divide=False, is_conquer=True)
    other = PseudoMask(box(s, 20, 30, 20, 30), 0, is_part=True, is_divide=False, is_conquer=True)
    assert merge_masks([huge, part, other]) == [part, other]

    def refine(image, mask):  # grows the 16x16 square by 1 px, wipes out the 10x10 one
        return box(s, 0, 17, 0, 17) if mask.sum() == 256 else np.zeros(s, bool)

    out = merge_masks([part, other], image=np.zeros(s + (3,)), refine=refine)
    assert out == [part] and part.area == 17 * 17


# ---------------------------------------------------------------- pipeline + COCO

def test_pipeline_and_coco_round_trip(tmp_path):
    img = two_tone_object()
    masks = pseudolabel_image((img * 255).astype(np.uint8), ColorFeatures(), NATIVE)
    # instance (from divide) + two halves (from conquer); the conquer "whole" was suppressed by the instance
    assert [(m.is_part, m.is_divide, m.is_conquer) for m in masks] == [
        (False, True, False), (True, False, True), (True, False, True)]
    np.testing.assert_allclose([m.granularity for m in masks], [1.0, 0.1, 0.1], atol=1e-6)
    assert mask_iou(masks[0].mask, box((96, 96), 24, 72, 16, 80)) > 0.95

    path = write_image_json(tmp_path / "a.json", masks, "a.png", 96, 96)
    back, g = read_pseudolabels(path)
    np.testing.assert_array_equal(back, np.stack([m.mask for m in masks]))
    np.testing.assert_allclose(g, [m.granularity for m in masks])
    data = json.loads(path.read_text())
    ann = data["annotations"][0]
    assert isinstance(ann["segmentation"]["counts"], str)
    assert ann["area"] == masks[0].area and ann["instance_id"] == 0 and ann["is_divide"] is True
    y0, x0, y1, x1 = masks[0].bbox
    assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
    assert data["images"][0] == {"id": 0, "file_name": "a.png", "height": 96, "width": 96}
    assert not list(tmp_path.glob(".*part"))                         # atomic write left no temp file


def test_user_proposals_replace_maskcut():
    img = two_tone_object()
    whole, left = box((96, 96), 24, 72, 16, 80), box((96, 96), 24, 72, 16, 48)
    masks = pseudolabel_image(img, ColorFeatures(), NATIVE, proposals=lambda im: [left, whole])
    divide_parts = [m for m in masks if m.is_divide and m.is_part]
    assert len(divide_parts) == 1 and np.array_equal(divide_parts[0].mask, left)
    assert divide_parts[0].granularity == pytest.approx(0.1)  # smallest of {whole, left, right}
    whole_masks = [m for m in masks if not m.is_part]
    assert len(whole_masks) == 1 and np.array_equal(whole_masks[0].mask, whole) and whole_masks[0].granularity == 1


def _write_images(folder, n=3):
    folder.mkdir()
    for i in range(n):
        img = two_tone_object()
        img = np.roll(img, 4 * i, axis=1)
        skio.imsave(folder / f"img{i}.png", (img * 255).astype(np.uint8), check_contrast=False)


def test_run_folder_resumes_and_redoes_corrupt(tmp_path):
    _write_images(tmp_path / "images")
    out = tmp_path / "labels"
    s1 = run_folder(tmp_path / "images", out, ColorFeatures(), NATIVE, progress=False)
    assert s1.processed == ["img0.png", "img1.png", "img2.png"] and not s1.failed
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    s2 = run_folder(tmp_path / "images", out, ColorFeatures(), NATIVE, progress=False)
    assert s2.processed == [] and len(s2.skipped) == 3
    text = (out / "img1.json").read_text()
    (out / "img1.json").write_text(text[: len(text) // 2])               # a partial file
    s3 = run_folder(tmp_path / "images", out, ColorFeatures(), NATIVE, progress=False)
    assert s3.processed == ["img1.png"] and sorted(s3.skipped) == ["img0.png", "img2.png"]
    assert read_image_json(out / "img1.json")["annotations"]
    for name in ("img0.json", "img2.json"):
        assert (out / name).stat().st_mtime_ns == mtimes[name]


def test_cli_color_backend_and_proposals(tmp_path, capsys):
    _write_images(tmp_path / "images", n=2)
    props = tmp_path / "props"
    props.mkdir()
    for i in range(2):
        labels = np.zeros((96, 96), np.uint16)
        labels[24:72, 16 + 4 * i:80 + 4 * i] = 1
        np.save(props / f"img{i}.npy", labels)
    rc = cli_main([str(tmp_path / "images"), str(tmp_path / "out"), "--backbone", "color", "--proposals",
                   str(props), "--divide-long-side", "native", "--conquer-long-side", "native", "--no-progress"])
    assert rc == 0
    masks, g = read_pseudolabels(tmp_path / "out" / "img1.json")
    assert g[0] == 1.0 and mask_iou(masks[0], box((96, 96), 24, 72, 20, 84)) == 1.0
    assert "2 images labelled" in capsys.readouterr().out
    assert cli_main([str(tmp_path / "images"), str(tmp_path / "o2"), "--backbone", "nope"]) == 2


# ---------------------------------------------------------------- timm backend (random weights, offline)

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def tiny_vit():
    import torch
    torch.manual_seed(0)
    return make_extractor("timm:vit_tiny_patch16_224", pretrained=False)


def test_timm_features_shape_and_prefix_tokens(tiny_vit):
    feats = tiny_vit(np.random.default_rng(0).random((80, 112, 3)).astype(np.float32), long_side=128)
    assert feats.shape == (6, 8, 192) and np.isfinite(feats).all()
    assert tiny_vit.num_prefix_tokens == 1 and tiny_vit.patch_size == 16


def test_timm_pipeline_end_to_end(tiny_vit, tmp_path):
    _write_images(tmp_path / "images", n=1)
    cfg = PseudoLabelConfig(divide_long_side=128, conquer_long_side=128, max_instances=2)
    summary = run_folder(tmp_path / "images", tmp_path / "out", tiny_vit, cfg, progress=False, stop_on_error=True)
    assert summary.processed == ["img0.png"]
    masks, g = read_pseudolabels(tmp_path / "out" / "img0.json")
    assert len(masks) >= 1 and masks.shape[1:] == (96, 96)
    assert ((g >= 0.1) & (g <= 1.0)).all() and (g == 1.0).any()


def test_timm_local_weights_and_offline_error(tmp_path, monkeypatch):
    import torch
    from granseg_training.pseudolabels.features import TimmFeatures

    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    torch.save({"model": ref.state_dict()}, tmp_path / "w.pth")
    ext = TimmFeatures("vit_tiny_patch16_224", pretrained_weights=tmp_path / "w.pth")
    for (k, a), b in zip(ref.state_dict().items(), ext.model.state_dict().values()):
        assert torch.equal(a, b), k

    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained and "pretrained_cfg_overlay" not in kw:
            raise OSError("no internet")
        return real(name, pretrained=pretrained, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="vit_tiny_patch16_224.*--pretrained-weights"):
        TimmFeatures("vit_tiny_patch16_224", pretrained=True)
    rc = cli_main([str(tmp_path), str(tmp_path / "o"), "--backbone", "timm:vit_tiny_patch16_224"])
    assert rc == 2


def test_unknown_backbone_message():
    with pytest.raises(ValueError, match="color.*timm:"):
        make_extractor("resnet")

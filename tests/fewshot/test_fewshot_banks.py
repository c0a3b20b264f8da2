"""Every reference counts: beyond SAM 2's 7 memory frames the references go into banks sharing reference 0."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_granseg.engine.episode import memory_banks, target_step
from napari_granseg.engine.fewshot import FewShotSegmenter
from napari_granseg.models.sansa import build_sansa_model
from napari_granseg.synthetic import shapes_scene


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    m = build_sansa_model("granseg_tiny.yaml")
    with torch.no_grad():
        for a in m.adapters().values():
            a.up_proj.weight.normal_(0, 0.5)
    return m.eval()


@pytest.fixture(scope="module")
def scenes():
    return [shapes_scene(size=64, n_objects=3, seed=100 + s) for s in range(22)]


def _segmenter(model, refs):
    fs = FewShotSegmenter(model, image_size=None, precision="fp32")
    for img, lab in refs:
        fs.add_reference(img, mask=lab == 1)
    return fs


@torch.inference_mode()
def _single_bank(fs, target) -> np.ndarray:
    """The episode as SAM 2 reads it with all references in one memory (the official episode)."""
    memory = fs.memory()
    feats = fs.encode(fs.prepare(target)[0])
    k = fs.num_references
    with fs.precision_context():
        return target_step(fs.sam, feats, memory, frame_idx=k, num_frames=k + 1)["pred_masks"][0, 0].numpy()


@pytest.mark.parametrize("k", [1, 4, 7])
def test_up_to_seven_references_are_the_official_episode_bit_for_bit(model, scenes, k):
    fs = _segmenter(model, scenes[:k])
    assert len(memory_banks(fs.sam, fs.memory())) == 1
    target = scenes[21][0]
    assert np.array_equal(fs.segment(target).logits, _single_bank(fs, target))


def test_banks_share_reference_zero_and_hold_every_reference_once(model, scenes):
    fs = _segmenter(model, scenes[:14])
    memory = fs.memory()
    banks = memory_banks(fs.sam, memory)
    assert [k for _, k in banks] == [6, 5, 5]  # 13 references after the first, in 3 near-equal groups
    ref0 = memory["cond_frame_outputs"][0]
    assert all(list(b["cond_frame_outputs"].values()) == [ref0] for b, _ in banks)
    assert all(sorted(b["non_cond_frame_outputs"]) == list(range(1, k)) for b, k in banks)
    held = [id(o) for b, _ in banks for o in b["non_cond_frame_outputs"].values()]
    assert sorted(held) == sorted(id(memory["non_cond_frame_outputs"][i]) for i in range(1, 14))


def test_ten_references_are_two_fused_episodes(model, scenes):
    """10 references = mean of the logits of the episodes [0, 1..5] and [0, 6..9]."""
    target = scenes[21][0]
    fused = _segmenter(model, scenes[:10]).segment(target)
    a = _segmenter(model, scenes[:6]).segment(target).logits
    b = _segmenter(model, [scenes[0]] + scenes[6:10]).segment(target).logits
    assert np.allclose(fused.logits, (a + b) / 2, atol=1e-6)
    assert np.array_equal(fused.mask, fused.probability > 0.5)

"""Memory (video) episodes of the UnSAMv2 trainer: drifting clips from one image, and SAM 2's tracking step
trained on them, so models trained from scratch learn the memory path that stack propagation uses."""
from __future__ import annotations

import random

import pytest
import torch

from granseg_training.unsamv2 import UnSAMv2TrainConfig, UnSAMv2Trainer
from granseg_training.unsamv2.data import SyntheticNestedDataset, collate_samples
from granseg_training.unsamv2.video import drifting_video

MEMORY_MODULES = ("memory_encoder.", "memory_attention.", "obj_ptr_proj.", "maskmem_tpos_enc")


def _batch(n_images: int = 2, seed: int = 4) -> dict:
    data = SyntheticNestedDataset(n_images, 256, scene_size=128, n_cells=2, seed=seed)
    return collate_samples([data[i] for i in range(n_images)])


def test_drifting_video_moves_masks_with_the_image():
    batch = _batch()
    frames, masks, g = drifting_video(batch["image"], batch["masks"], batch["granularity"], n_frames=4,
                                      max_drift=5.0, max_objects=3, rng=random.Random(0), noise=0.0)
    assert frames.shape == (2, 4, 3, 256, 256)
    for i in range(2):
        assert masks[i].shape[:2] == (3, 4) and len(g[i]) == 3
        assert set(g[i].tolist()) <= set(batch["granularity"][i].tolist())
        first = masks[i][:, 0]
        assert any(torch.equal(first[0], m) for m in batch["masks"][i])  # frame 0 = the original masks
        for t in range(1, 4):
            # the shift that maps frame 0's image onto frame t maps its masks onto frame t's masks too
            shifts = [(dy, dx) for dy in range(-20, 21) for dx in range(-20, 21)
                      if torch.equal(torch.roll(frames[i, 0], (dy, dx), dims=(-2, -1)), frames[i, t])]
            assert shifts, f"frame {t} is not a shifted frame 0"
            assert torch.equal(torch.roll(first, shifts[0], dims=(-2, -1)), masks[i][:, t])
        assert not torch.equal(frames[i, 0], frames[i, 3]), "the clip should move"


def _trainer(tmp_path, video_prob: float) -> UnSAMv2Trainer:
    cfg = UnSAMv2TrainConfig(model_config="granseg_tiny.yaml", trainable="all", steps=2, batch_size=2, lr=1e-3,
                             scene_size=128, n_cells=[1, 2], correction_clicks=1, video_prob=video_prob,
                             video_frames=3, device="cpu", out_dir=str(tmp_path), progress=False, seed=2,
                             warmup_steps=0)
    return UnSAMv2Trainer(cfg)


@pytest.mark.parametrize("video_prob", [0.0, 1.0])
def test_only_memory_episodes_train_the_memory_modules(tmp_path, video_prob):
    trainer = _trainer(tmp_path, video_prob)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    history = trainer.fit(2)
    assert [r["video"] for r in history] == [video_prob] * 2
    after = trainer.model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    memory_changed = {k for k in changed if k.startswith(MEMORY_MODULES)}
    assert any(k.startswith("sam_mask_decoder.") for k in changed)
    if video_prob:
        assert {k.split(".")[0] for k in memory_changed} >= {"memory_encoder", "memory_attention"}
        assert all(0.0 <= r["iou_tracked"] <= 1.0 for r in history)
    else:
        assert not memory_changed, "an image step should not reach the memory modules"


def test_video_prob_is_checked():
    with pytest.raises(ValueError, match="video_prob"):
        UnSAMv2TrainConfig(video_prob=1.5)
    with pytest.raises(ValueError, match="video_frames"):
        UnSAMv2TrainConfig(video_prob=0.5, video_frames=1)


@pytest.mark.parametrize("video_prob", [0.0, 1.0])
def test_an_image_without_masks_in_the_batch_is_trained_around(tmp_path, video_prob):
    """COCO pseudo-labels can leave an image with no mask (all below min_area or cropped away); the other images
    of its batch still train (image steps and memory episodes)."""
    trainer = _trainer(tmp_path, video_prob)
    batch = _batch()
    batch["masks"][0] = batch["masks"][0][:0]
    batch["granularity"][0] = batch["granularity"][0][:0]
    rec = trainer.train_step(batch)
    assert rec["n_masks"] == (min(3, len(batch["masks"][1])) if video_prob else len(batch["masks"][1]))
    assert rec["video"] == video_prob and 0.0 <= rec["iou"] <= 1.0

"""The pieces both trainers and the evaluations share: LR schedule, seeding, COCO RLE, IoU, autocast policy."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from granseg_training.evaluation.metrics import iou
from granseg_training.rle import decode_segmentation, encode_rle, rle_area, rle_bbox
from granseg_training.schedule import warmup_cosine_factor, warmup_cosine_schedule
from granseg_training.seeding import seed_everything
from napari_granseg.finetuning.losses import mask_iou as batch_mask_iou


def _previous_unsamv2_factor(step: int, steps: int, warmup_steps: int, lr: float, lr_min: float) -> float:
    """The UnSAMv2 trainer's schedule as it was written before the shared module (the reference)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    rate = lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * t))
    return rate / lr


def _rates(optimizer: torch.optim.Optimizer, scheduler, n: int) -> list[float]:
    param = optimizer.param_groups[0]["params"][0]
    out = []
    for _ in range(n):
        out.append(optimizer.param_groups[0]["lr"])
        param.grad = torch.ones_like(param)
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize("steps, warmup, lr, lr_min", [(2000, 20, 3e-4, 3e-5), (1000, 0, 1e-4, 1e-5),
                                                       (50, 10, 2e-4, 1e-4), (1, 0, 1e-3, 0.0)])
def test_schedule_gives_the_previous_rate_at_every_step(steps, warmup, lr, lr_min):
    def optimizer():
        return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))], lr=lr)

    old_opt = optimizer()
    old = torch.optim.lr_scheduler.LambdaLR(
        old_opt, lambda k: _previous_unsamv2_factor(k, steps, warmup, lr, lr_min))
    new_opt = optimizer()
    new = warmup_cosine_schedule(new_opt, steps, warmup, lr_min)
    n = steps + 5  # past the end it stays at lr_min
    assert _rates(new_opt, new, n) == _rates(old_opt, old, n)  # bit for bit, not approx
    assert new_opt.param_groups[0]["lr"] == pytest.approx(lr_min, abs=1e-18)


def test_schedule_shape_and_bad_arguments():
    f = [warmup_cosine_factor(k, 100, 10, 1e-3, 1e-4) for k in range(101)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0 and f[10] == 1.0
    assert f[55] == pytest.approx(0.55) and f[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # never rises after the warm-up
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    with pytest.raises(ValueError, match="lr"):
        warmup_cosine_schedule(opt, 10, 0, 0.0)
    with pytest.raises(ValueError, match="steps"):
        warmup_cosine_schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 0, 0, 0.0)


def test_unsamv2_trainer_uses_the_shared_schedule(tmp_path):
    from granseg_training.unsamv2.recipes import fast_test_config
    from granseg_training.unsamv2.trainer import UnSAMv2Trainer

    cfg = fast_test_config(tmp_path)
    trainer = UnSAMv2Trainer(cfg)
    factor = trainer.scheduler.lr_lambdas[0]
    assert [factor(k) for k in range(cfg.steps + 3)] == \
        [_previous_unsamv2_factor(k, cfg.steps, cfg.warmup_steps, cfg.lr, cfg.lr_min) for k in range(cfg.steps + 3)]
    assert trainer.optimizer.param_groups[0]["lr"] == cfg.lr * (1 / cfg.warmup_steps)


def test_seed_everything_repeats_every_generator():
    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    seed_everything(7)
    a = draws()
    seed_everything(7)
    assert draws() == a
    seed_everything(8)
    assert draws() != a
    seed_everything(2**32 + 7)  # numpy takes the seed modulo 2**32, the others whole
    assert float(np.random.rand()) == a[1]


def test_rle_round_trip_as_json():
    rng = np.random.default_rng(0)
    masks = [rng.random((37, 53)) > 0.6, np.zeros((8, 9), bool), np.ones((4, 6), bool)]
    for m in masks:
        rle = json.loads(json.dumps(encode_rle(m)))  # counts is a str: JSON as is
        assert rle["size"] == list(m.shape) and isinstance(rle["counts"], str)
        np.testing.assert_array_equal(decode_segmentation(rle, *m.shape), m)
        assert rle_area(rle) == int(m.sum())
    box = np.zeros((20, 30), bool)
    box[5:9, 10:22] = True  # rows 5..8, columns 10..21
    assert rle_bbox(encode_rle(box)) == [10.0, 5.0, 12.0, 4.0]
    assert encode_rle(box.astype(np.uint16) * 300) == encode_rle(box)  # nonzero = inside, whatever the dtype


def test_rle_decodes_polygons_and_uncompressed_counts():
    poly = [[2.0, 2.0, 12.0, 2.0, 12.0, 8.0, 2.0, 8.0]]  # x, y pairs of a 10 x 6 rectangle
    m = decode_segmentation(poly, 16, 20)
    assert m.shape == (16, 20) and m[4, 6] and not m[12, 15]
    assert abs(int(m.sum()) - 10 * 6) <= 20  # pycocotools' rasterisation of the border
    # uncompressed RLE: column-major runs, starting with background
    unc = {"size": [3, 4], "counts": [4, 2, 6]}
    expected = np.zeros((3, 4), bool)
    expected.T.flat[4:6] = True
    np.testing.assert_array_equal(decode_segmentation(unc, 3, 4), expected)
    raw_bytes = dict(encode_rle(expected), counts=encode_rle(expected)["counts"].encode("ascii"))
    np.testing.assert_array_equal(decode_segmentation(raw_bytes, 3, 4), expected)


def test_numpy_and_batch_iou_agree_including_empty_masks():
    rng = np.random.default_rng(1)
    a = rng.random((6, 12, 12)) > 0.5
    b = rng.random((6, 12, 12)) > 0.5
    a[0] = False
    b[0] = False  # both empty: 1.0 in both definitions
    a[1] = False  # one empty: 0.0
    ours = [iou(x, y) for x, y in zip(a, b)]
    batch = batch_mask_iou(torch.from_numpy(a), torch.from_numpy(b)).tolist()
    assert ours[0] == batch[0] == 1.0 and ours[1] == batch[1] == 0.0
    np.testing.assert_allclose(batch, ours, rtol=1e-6)
    assert iou(a[2], b[2]) == iou(b[2], a[2])  # symmetric


def test_precision_policy_of_the_unsamv2_trainer(tmp_path):
    from granseg_training.unsamv2.config import UnSAMv2TrainConfig
    from granseg_training.unsamv2.recipes import fast_test_config
    from granseg_training.unsamv2.trainer import UnSAMv2Trainer

    assert UnSAMv2TrainConfig().precision == "auto"
    with pytest.raises(ValueError, match="precision='fp16'"):
        UnSAMv2TrainConfig(precision="fp16")
    trainer = UnSAMv2Trainer(fast_test_config(tmp_path, precision="auto"))
    with trainer._autocast():  # auto on a CPU: float32, even on CPUs with bf16 (as before)
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    trainer.cfg.precision = "bf16"
    with trainer._autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    trainer.cfg.precision = "fp32"
    with torch.autocast("cpu", dtype=torch.bfloat16), trainer._autocast():  # fp32 even inside a caller's autocast
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32

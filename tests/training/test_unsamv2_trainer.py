"""The UnSAMv2 trainer: loss falls, upstream checkpoint layout, what trains in 'upstream' mode."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import napari_granseg as gs
from napari_granseg.checkpoints import read_state_dict, save_checkpoint
from napari_granseg.models.lora import merge_lora
from napari_granseg.models.unsamv2 import build_unsamv2

from granseg_training.unsamv2 import UnSAMv2TrainConfig, UnSAMv2Trainer, granularity_of_areas
from napari_granseg.finetuning.clicks import correction_clicks, first_clicks, inner_masks
from granseg_training.unsamv2.data import CocoGranularityDataset, SyntheticNestedDataset, scene_targets
from granseg_training.unsamv2.trainer import decode, image_features, is_upstream_trainable
from napari_granseg.synthetic import nested_cells_scene


def test_loss_falls_over_training(trained_unsamv2_run):
    _, history, path = trained_unsamv2_run
    losses = [r["loss"] for r in history]
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.8 * first, f"loss {first:.3f} -> {last:.3f}"
    assert np.mean([r["iou"] for r in history[-10:]]) > np.mean([r["iou"] for r in history[:10]]) + 0.2
    log = [json.loads(line) for line in (path.parent / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, len(history) + 1))


def test_granularity_formula():
    # sqrt areas 1, 4, 10 -> 0.1, 0.1 + 0.9 * 3/9, 1.0
    np.testing.assert_allclose(granularity_of_areas([1, 16, 100]), [0.1, 0.4, 1.0], atol=1e-6)
    np.testing.assert_allclose(granularity_of_areas([50]), [1.0])
    masks, g = scene_targets(nested_cells_scene(size=128, n_cells=2, seed=3))
    assert len(masks) == len(g) == 6
    np.testing.assert_allclose(g[0::3], 0.1, atol=1e-6)  # nucleoli
    np.testing.assert_allclose(g[2::3], 1.0, atol=1e-6)  # cells
    assert np.all((g[1::3] > 0.2) & (g[1::3] < 0.8))  # nuclei in between


def test_synthetic_dataset_is_deterministic():
    a = SyntheticNestedDataset(4, 256, scene_size=128, n_cells=2, seed=1)[2]
    b = SyntheticNestedDataset(4, 256, scene_size=128, n_cells=2, seed=1)[2]
    assert a["image"].shape == (3, 256, 256) and a["masks"].shape[1:] == (256, 256)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["masks"], b["masks"])
    assert 0.0 <= float(a["image"].min()) and float(a["image"].max()) <= 1.0


def test_coco_pseudolabels_are_read(tmp_path):
    from PIL import Image
    from pycocotools import mask as mask_utils

    scene = nested_cells_scene(size=64, n_cells=1, seed=5)
    Image.fromarray((scene.image // 256).astype(np.uint8)).save(tmp_path / "a.png")
    anns = []
    for k, (m, g) in enumerate(zip(*scene_targets(scene))):
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        anns.append({"id": k, "image_id": 1, "segmentation": rle, "granularity": float(g), "area": int(m.sum())})
    (tmp_path / "labels.json").write_text(json.dumps(
        {"images": [{"id": 1, "file_name": "a.png", "height": 64, "width": 64}], "annotations": anns}))
    ds = CocoGranularityDataset(tmp_path / "labels.json", image_size=128)
    sample = ds[0]
    assert sample["masks"].shape == (3, 128, 128)
    np.testing.assert_allclose(sorted(sample["granularity"].tolist()), sorted(a["granularity"] for a in anns))
    # areas survive the 2x nearest resize (x4 area)
    areas = sorted(int(m.sum()) for m in sample["masks"])
    assert areas == sorted(4 * a["area"] for a in anns)


def test_clicks_land_where_they_should():
    scene = nested_cells_scene(size=64, n_cells=1, seed=2)
    masks = torch.from_numpy(np.stack(scene_targets(scene)[0]))
    assert inner_masks(masks).tolist() == [0, 0, 0]  # the nucleolus is the innermost mask of all three
    gen = torch.Generator().manual_seed(0)
    coords, labels = first_clicks(masks, inner_prob=1.0, generator=gen)
    xs, ys = coords[:, 0, 0].long(), coords[:, 0, 1].long()
    assert bool(masks[0, ys, xs].all()) and labels.eq(1).all()
    # corrections: predicted nothing -> positive click inside the target; predicted all -> negative outside
    target = masks[2:3]
    c, lab = correction_clicks(torch.zeros_like(target), target, gen)
    assert lab.item() == 1 and target[0, int(c[0, 0, 1]), int(c[0, 0, 0])]
    c, lab = correction_clicks(torch.ones_like(target), target, gen)
    assert lab.item() == 0 and not target[0, int(c[0, 0, 1]), int(c[0, 0, 0])]
    _, lab = correction_clicks(target.clone(), target, gen)
    assert lab.item() == -1


@pytest.fixture(scope="module")
def upstream_run(tmp_path_factory):
    """A few 'upstream' steps from a saved random tiny model (as one would start from SAM 2.1 weights)."""
    out = tmp_path_factory.mktemp("unsamv2_upstream")
    torch.manual_seed(123)
    base = build_unsamv2("granseg_tiny.yaml")
    plain = {k: v for k, v in base.state_dict().items() if not k.startswith(
        ("sam_prompt_encoder.fourier_embedder", "sam_prompt_encoder.granularity_embedding",
         "sam_mask_decoder.gra_"))}  # a SAM 2-only checkpoint: no granularity modules
    init = save_checkpoint(plain, out / "init_sam2.pt")
    cfg = UnSAMv2TrainConfig(model_config="granseg_tiny.yaml", init_checkpoint=str(init), trainable="upstream",
                             steps=4, batch_size=1, lr=1e-3, n_cells=[1, 1], correction_clicks=1,
                             device="cpu", out_dir=str(out), progress=False, seed=3)
    trainer = UnSAMv2Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    path = trainer.save()
    return trainer, before, path, plain


def test_upstream_checkpoint_layout(upstream_run):
    trainer, _, path, plain = upstream_run
    state = read_state_dict(path)
    lora_a = [k for k in state if k.endswith(".lora_A")]
    assert len(lora_a) == 28 and len([k for k in state if k.endswith(".lora_B")]) == 28
    assert len([k for k in state if ".original_layer." in k]) == 56
    assert "sam_mask_decoder.gra_token.weight" in state
    assert "sam_prompt_encoder.fourier_embedder.mlp.mlp.0.weight" in state
    # the SAM 2 weights it started from are there, under the LoRA-wrapped names where wrapped
    name = "sam_mask_decoder.transformer.layers.0.self_attn.q_proj"
    assert torch.equal(state[f"{name}.original_layer.weight"], plain[f"{name}.weight"])
    assert torch.equal(state["image_encoder.trunk.patch_embed.proj.weight"],
                       plain["image_encoder.trunk.patch_embed.proj.weight"])


def test_upstream_checkpoint_loads_and_matches_merged_model(upstream_run):
    trainer, _, path, _ = upstream_run
    assert any(trainer.model.state_dict()[k].abs().sum() > 0 for k in trainer.model.state_dict()
               if k.endswith(".lora_B")), "LoRA did not train: the merge check would be vacuous"
    loaded = gs.load_model(path, kind="unsamv2", config="granseg_tiny.yaml", device="cpu")
    merged = copy.deepcopy(trainer.model).eval()
    assert merge_lora(merged) == 28
    torch.manual_seed(0)
    images = torch.randn(1, 3, 256, 256)
    coords = torch.tensor([[[100.0, 80.0], [30.0, 200.0]]]).expand(3, -1, -1)
    labels = torch.tensor([[1, 0]], dtype=torch.int32).expand(3, -1)
    g = torch.tensor([0.1, 0.5, 1.0])
    outs = []
    with torch.no_grad():
        for model in (loaded.module, merged, trainer.model.eval()):
            emb, hr = image_features(model, images)
            low, iou, obj = decode(model, emb.expand(3, -1, -1, -1), [f.expand(3, -1, -1, -1) for f in hr],
                                   coords, labels, None, g)
            outs.append((low, iou, obj))
    for a, b in zip(outs[0], outs[1]):
        assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
    for a, b in zip(outs[0], outs[2]):  # unmerged LoRA in eval mode computes the same function
        assert torch.allclose(a, b, atol=1e-4), float((a - b).abs().max())
    assert not torch.allclose(outs[0][0][0], outs[0][0][2], atol=1e-3)  # g changes the mask


def test_upstream_mode_trains_only_granularity_and_lora(upstream_run):
    trainer, before, _, _ = upstream_run
    after = trainer.model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed, "nothing trained"
    frozen_changed = sorted(k for k in changed if not is_upstream_trainable(k))
    assert not frozen_changed, f"frozen tensors changed: {frozen_changed[:5]}"
    assert any(k.endswith(".lora_B") for k in changed)
    assert any(k.startswith("sam_mask_decoder.gra_output_token_mlp") for k in changed)
    assert any(k.startswith("sam_prompt_encoder.fourier_embedder") for k in changed)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if is_upstream_trainable(n)}


def test_config_file_and_cli_flags(tmp_path):
    from granseg_training.cli import _config_from_args, build_parser

    (tmp_path / "run.yaml").write_text("model_config: granseg_tiny.yaml\nsteps: 7\nlr: 0.0005\n"
                                       "augment: {enabled: true, hflip: 1.0}\n")
    args = build_parser().parse_args(["unsamv2", "--config", str(tmp_path / "run.yaml"), "--steps", "9",
                                      "--set", "n_cells=[2,3]", "precision=fp32"])
    cfg = _config_from_args(args)
    assert (cfg.steps, cfg.lr, cfg.n_cells, cfg.precision, cfg.augment.enabled, cfg.augment.hflip) == \
        (9, 0.0005, [2, 3], "fp32", True, 1.0)
    with pytest.raises(ValueError, match="unknown UnSAMv2 training option"):
        UnSAMv2TrainConfig.from_dict({"stepz": 3})


def test_joint_augmentation_moves_image_and_masks_together():
    from granseg_training.unsamv2.augment import AugmentConfig, JointAugment

    sample = SyntheticNestedDataset(1, 128, scene_size=64, n_cells=1, seed=4)[0]
    aug = JointAugment(AugmentConfig(enabled=True, hflip=1.0, affine_p=1.0, color_jitter_p=0.0, grayscale=0.0))
    out = aug(sample, np.random.default_rng(0))
    again = aug(sample, np.random.default_rng(0))
    assert torch.equal(out["masks"], again["masks"])  # seeded
    assert not torch.equal(out["masks"], sample["masks"])
    # the brightest pixels (nucleolus) stay inside the transformed nucleolus mask
    bright = out["image"][0] > 0.9
    assert bright.any() and (out["masks"][0] | ~bright).float().mean() > 0.99

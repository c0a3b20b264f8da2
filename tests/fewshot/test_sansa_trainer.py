"""The SANSA trainer: recipe pieces (schedule, loss, episodes, prompts), checkpoint layouts, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from granseg_training.sansa import SansaTrainConfig, SansaTrainer
from granseg_training.sansa.cli import main as cli_main
from granseg_training.sansa.data import FolderEpisodes, SyntheticEpisodes
from granseg_training.sansa.losses import dice_loss, sigmoid_focal_loss
from napari_granseg.checkpoints import read_state_dict
from napari_granseg.loading import load_sansa
from napari_granseg.models.sansa import is_adapter_key


def _tiny(tmp_path, **kw):
    data = dict(model_config="granseg_tiny.yaml", data="synthetic", scene_size=64, image_size=None, loss_size=None,
                batch_size=2, steps=3, device="cpu", progress=False, out_dir=str(tmp_path), log_every=0)
    data.update(kw)
    return SansaTrainConfig.from_dict(data)


def test_losses_by_hand():
    logits = torch.tensor([[[0.0, 0.0]]])
    target = torch.tensor([[[1.0, 0.0]]])
    # p = 0.5 everywhere: focal = mean(0.25 * ln2 * 0.25, 0.75 * ln2 * 0.25); dice = 1 - (2*0.5+1)/(1+1+1)
    assert sigmoid_focal_loss(logits, target).item() == pytest.approx(np.log(2) * 0.25 * (0.25 + 0.75) / 2)
    assert dice_loss(logits, target).item() == pytest.approx(1 - 2 / 3)


def test_adapter_only_training_changes_only_adapters(tmp_path):
    cfg = _tiny(tmp_path, trainable="adapters", prompt="multi", shots=2, steps=4)
    trainer = SansaTrainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(is_adapter_key(k[4:]) for k in changed)
    assert any("up_proj" in k for k in changed)
    assert trainer.lr_at(0) == pytest.approx(1e-4) and trainer.lr_at(cfg.steps) == pytest.approx(0.0)
    path = trainer.save()
    state = torch.load(path, weights_only=True)
    assert set(state) >= {"model"} and all(is_adapter_key(k[4:]) for k in state["model"])
    assert len(state["model"]) == 18  # 3 adapted blocks x 6 tensors (Hiera-L: 240)
    m = load_sansa("granseg_tiny.yaml", adapter_checkpoint=path)
    for k, v in state["model"].items():
        assert torch.equal(m.state_dict()[k], v)
    hist = json.loads(path.with_suffix(".json").read_text())["history"]
    assert len(hist) == 4 and all(np.isfinite(h["loss"]) for h in hist)


def test_from_scratch_saves_base_and_adapters(tmp_path):
    import napari_granseg as gs

    trainer = SansaTrainer(_tiny(tmp_path, trainable="all", steps=2, checkpoint_name="tiny.pt"))
    trainer.fit()
    path = trainer.save()
    assert (tmp_path / "tiny_adapters.pth").is_file()
    assert len(read_state_dict(path)) == len(trainer.model.state_dict())
    loaded = gs.load_model(path, kind="sansa", config="granseg_tiny.yaml", device="cpu")
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[k], v), k


def test_episodes_share_a_class(tmp_path):
    rng = np.random.default_rng(0)
    ep = SyntheticEpisodes(size=64).sample(3, rng)
    assert len(ep.images) == 3 and ep.class_id in (1, 2) and all(m.sum() >= 16 for m in ep.masks)
    import tifffile

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    from napari_granseg.synthetic import shapes_scene

    for i in range(3):
        img, lab = shapes_scene(size=64, seed=i)
        tifffile.imwrite(tmp_path / "images" / f"s{i}.tif", img)
        tifffile.imwrite(tmp_path / "labels" / f"s{i}.tif", lab.astype(np.uint16))
    folder = FolderEpisodes(tmp_path)
    assert folder.classes == [1, 2]
    ep = folder.sample(2, rng)
    assert all(m.any() for m in ep.masks)
    with pytest.raises(ValueError, match="data_root"):
        SansaTrainConfig(data="folder")


def test_cli_trains_and_saves(tmp_path, capsys):
    rc = cli_main(["--model-config", "granseg_tiny.yaml", "--trainable", "all", "--steps", "2", "--batch-size", "1",
                   "--scene-size", "64", "--image-size", "0", "--loss-size", "0", "--device", "cpu",
                   "--out-dir", str(tmp_path), "--no-progress", "--set", "n_objects=[2,2]"])
    assert rc == 0 and (tmp_path / "sansa_adapters.pth").is_file()
    assert "checkpoint:" in capsys.readouterr().out

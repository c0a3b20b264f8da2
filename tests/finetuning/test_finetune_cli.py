"""`granseg finetune` on folders: images paired with label images by name as the few-shot command pairs them;
a good folder gives a checkpoint load_model reads; bad files are named one line each and nothing is written."""
from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile

import napari_granseg as gs
from napari_granseg.cli import main
from napari_granseg.finetuning.advice import GOOD_ENOUGH, WORSE_BY
from napari_granseg.synthetic_domains import dark_blobs_scene


@pytest.fixture
def folders(tmp_path, monkeypatch):
    monkeypatch.setenv("GRANSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GRANSEG_OFFLINE", "1")
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(2):
        img, lab = dark_blobs_scene(size=64, n_objects=3, seed=20 + i)
        tifffile.imwrite(images / f"cell_{i}.tif", img)
        tifffile.imwrite(labels / (f"cell_{i}_labels.tif" if i else f"cell_{i}.tif"), lab.astype(np.uint16))
    return images, labels


def test_cli_finetunes_a_folder_and_the_checkpoint_loads(folders, tmp_path, capsys):
    images, labels = folders
    out = tmp_path / "model.pt"
    rc = main(["finetune", str(images), "--labels", str(labels), "--out", str(out), "--steps", "3", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file(), text
    found = re.search(r"click IoU ([0-9.]+) before -> ([0-9.]+) after", text)
    assert found, text
    before, after = float(found[1]), float(found[2])  # printed to 3 decimals: kinds of advice, not exact words
    worse, poor = after < before - WORSE_BY, after < GOOD_ENOUGH
    if min(abs(after - before + WORSE_BY), abs(after - GOOD_ENOUGH)) > 1e-3:
        assert ("does worse than the one it started from" in text) == worse, text
        assert ("label more images" in text) == (poor or worse), text
    model = gs.load_model(out, device="cpu")
    assert model.kind == "unsamv2" and model.info == {} and model.config == "granseg_tiny.yaml"


def test_cli_names_each_bad_file_and_writes_nothing(folders, tmp_path, capsys):
    images, labels = folders
    tifffile.imwrite(images / "lonely.tif", np.zeros((64, 64), np.uint16))
    tifffile.imwrite(labels / "cell_1_labels.tif", np.ones((60, 64), np.uint16))  # another shape
    out = tmp_path / "model.pt"
    rc = main(["finetune", str(images), "--labels", str(labels), "--out", str(out), "--steps", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not out.exists()
    assert sum("lonely.tif" in line and "no label image" in line for line in err) == 1, err
    assert sum("cell_1_labels.tif" in line and "height and width" in line for line in err) == 1, err
    assert not any("cell_0" in line for line in err)

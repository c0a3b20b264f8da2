"""The batch CLI's --channels / --channel-axis and --scale / --tile flags, end to end with the demo model."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_granseg.batch import Job
from napari_granseg.batch.job import fingerprint
from napari_granseg.cli import main

from .test_channels import two_channel_scene
from .test_tiling import mosaic


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _prompt_file(path, name: str, clicks) -> None:
    rows = ["image,row,col,granularity,object"] + [f"{name},{r:.1f},{c:.1f},1.0,{k}"
                                                    for k, (r, c) in enumerate(clicks, start=1)]
    path.write_text("\n".join(rows) + "\n")


def test_channel_and_scale_choices_are_part_of_the_fingerprint():
    base = Job(mode="whole").core()
    for change in (dict(channels=1), dict(channels=(0, 1)), dict(channel_axis=0), dict(scale="downscale"),
                   dict(tile=512)):
        assert fingerprint(Job(mode="whole", **change).core()) != fingerprint(base), change
    with pytest.raises(ValueError, match="--scale"):
        Job(scale="tiles")
    with pytest.raises(ValueError, match="--channels"):
        Job(channels=(0, 1, 2, 3))


@pytest.fixture()
def two_channel_folder(tmp_path):
    image, scene = two_channel_scene()
    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "two.tif", image)
    _prompt_file(tmp_path / "prompts.csv", "two.tif", [scene.centers[1]])  # cell B: visible in channel 1 only
    return folder, scene


def test_channels_flag_finds_the_cell_seen_in_that_channel_only(two_channel_folder, tmp_path):
    folder, scene = two_channel_folder
    cell_b = scene.masks[2][1]
    ious = {}
    for channel in (1, 0):
        out = tmp_path / f"out{channel}"
        code = main(["segment", str(folder), "--prompts", str(tmp_path / "prompts.csv"), "--model", "unsamv2-demo",
                     "--channels", str(channel), "--out", str(out), "--no-progress", "--precision", "fp32"])
        assert code == 0
        ious[channel] = _iou(tifffile.imread(out / "two_labels.tif") == 1, cell_b)
    assert ious[1] > 0.8 and ious[0] < 0.5, ious


def test_without_channels_the_cli_says_to_pass_channels_in_one_line(two_channel_folder, tmp_path, capsys):
    folder, _ = two_channel_folder
    code = main(["segment", str(folder), "--model", "unsamv2-demo", "--out", str(tmp_path / "out"),
                 "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "two.tif has 2 channels" in err and "--channels" in err
    assert not (tmp_path / "out").exists()  # nothing computed, nothing written


def test_scale_flag_on_a_large_mosaic(tmp_path):
    """``--scale auto`` tiles a mosaic 3.3x the model's input: the clicked cells come back whole;
    ``--scale downscale`` squeezes it into one input and misses them."""
    image, cells = mosaic(3, 3)
    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "mosaic.tif", image)
    picked = cells[::3]
    _prompt_file(tmp_path / "prompts.csv", "mosaic.tif", [centre for _, centre in picked])
    ious = {}
    for scale in ("auto", "downscale"):
        out = tmp_path / scale
        code = main(["segment", str(folder), "--prompts", str(tmp_path / "prompts.csv"), "--model", "unsamv2-demo",
                     "--scale", scale, "--out", str(out), "--no-progress", "--precision", "fp32"])
        assert code == 0
        labels = tifffile.imread(out / "mosaic_labels.tif")
        ious[scale] = [_iou(labels == k, mask) for k, (mask, _) in enumerate(picked, start=1)]
    assert min(ious["auto"]) > 0.75, ious
    assert np.mean(ious["downscale"]) < np.mean(ious["auto"]) - 0.2, ious


def test_fewshot_channels_apply_to_references_and_targets(tmp_path):
    """``granseg fewshot --channels 0`` on 2-channel references and targets gives exactly the labels of the
    same run on the channel-0 images alone (the other channel, noise, is not seen)."""
    from napari_granseg.synthetic import shapes_scene

    rng = np.random.default_rng(3)
    dirs = {name: {k: tmp_path / k / name for k in ("one", "two")} for name in ("refs", "labels", "targets")}
    for per_kind in dirs.values():
        for d in per_kind.values():
            d.mkdir(parents=True)
    for i in range(3):
        image, labels = shapes_scene(size=96, n_objects=4, seed=20 + i)
        noise = rng.integers(0, 255, image.shape[:2], dtype=np.uint8)
        plane = image if image.ndim == 2 else image[..., 0]
        role = "refs" if i == 0 else "targets"
        tifffile.imwrite(dirs[role]["one"] / f"s{i}.tif", plane)
        tifffile.imwrite(dirs[role]["two"] / f"s{i}.tif", np.stack([plane, noise], axis=-1))
        if i == 0:
            for kind in ("one", "two"):
                tifffile.imwrite(dirs["labels"][kind] / f"s{i}_labels.tif", labels.astype(np.uint16))
    results = {}
    for kind, extra in (("one", []), ("two", ["--channels", "0"])):
        out = tmp_path / f"out_{kind}"
        code = main(["fewshot", "--references", str(dirs["refs"][kind]), "--reference-labels",
                     str(dirs["labels"][kind]), str(dirs["targets"][kind]), "--model", "sansa-demo",
                     "--image-size", "128", "--out", str(out), "--no-progress", "--precision", "fp32", *extra])
        assert code == 0
        results[kind] = [tifffile.imread(out / f"s{i}_labels.tif") for i in (1, 2)]
    assert any(r.any() for r in results["one"])  # the classes are found, not an empty run
    for a, b in zip(results["one"], results["two"]):
        np.testing.assert_array_equal(a, b)

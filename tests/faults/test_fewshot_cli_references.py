"""Few-shot CLI: every problem with the references is found before any target is processed, named by file
(reference image and label image), the run exits non-zero and writes nothing."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_granseg.batch import Job
from napari_granseg.batch.references import ReferenceError
from napari_granseg.batch.worker import fewshot_references
from napari_granseg.cli import main


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _disc(size: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 5) ** 2).astype(np.uint8)


@pytest.fixture()
def folders(tmp_path):
    """Two good reference pairs (a.tif, b.tif) and one target; tests spoil one pair."""
    refs, labs, targets = (tmp_path / n for n in ("refs", "labels", "targets"))
    for d in (refs, labs, targets):
        d.mkdir()
    for name in ("a", "b"):
        tifffile.imwrite(refs / f"{name}.tif", (_disc() * 200).astype(np.uint8))
        tifffile.imwrite(labs / f"{name}.tif", _disc())
    tifffile.imwrite(targets / "target.tif", (_disc() * 180).astype(np.uint8))
    return tmp_path


def _run(root: Path, capsys) -> tuple[int, str]:
    before = snapshot(root)
    rc = main(["fewshot", str(root / "targets"), "--references", str(root / "refs"), "--reference-labels",
               str(root / "labels"), "--out", str(root / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert snapshot(root) == before and not (root / "out").exists()  # nothing written
    assert "Traceback" not in err and "target.tif" not in err  # blamed on the references, not the target
    return rc, err


@pytest.mark.parametrize("spoil, expected", [
    (lambda r: tifffile.imwrite(r / "labels" / "b.tif", np.ones((40, 30), np.uint8)),
     "has shape (40, 30), but its reference image"),
    (lambda r: tifffile.imwrite(r / "labels" / "b.tif", np.zeros((48, 48), np.uint8)), "has no object"),
    (lambda r: tifffile.imwrite(r / "labels" / "b.tif", _disc().astype(np.float32) * 0.7), "non-integer values"),
    (lambda r: tifffile.imwrite(r / "labels" / "b.tif", -_disc().astype(np.int16)), "negative values"),
    (lambda r: tifffile.imwrite(r / "labels" / "b.tif", np.zeros((3, 48, 48), np.uint8)), "shape (3, 48, 48)"),
])
def test_a_bad_label_image_is_named_with_its_reference_image(folders, capsys, spoil, expected):
    spoil(folders)
    rc, err = _run(folders, capsys)
    assert rc == 2 and err.startswith("granseg: error: ")
    assert expected in err and str(folders / "labels" / "b.tif") in err
    assert "a.tif" not in err  # the good pair is not blamed


def test_colour_coded_labels_are_refused_with_their_colours(folders, capsys):
    rgb = np.zeros((48, 48, 3), np.uint8)
    rgb[_disc() > 0] = (255, 0, 0)  # class 1 red
    rgb[:8, :8] = (0, 255, 0)  # class 2 green
    tifffile.imwrite(folders / "labels" / "a.tif", rgb, photometric="rgb")
    rc, err = _run(folders, capsys)
    assert rc == 2 and "colour-coded" in err and str(folders / "labels" / "a.tif") in err
    assert "(255, 0, 0)" in err and "(0, 255, 0)" in err and "single-channel integer" in err


def test_a_reference_image_without_label_image_is_named(folders, capsys):
    tifffile.imwrite(folders / "refs" / "c.tif", (_disc() * 90).astype(np.uint8))
    rc, err = _run(folders, capsys)
    assert rc == 2 and "c.tif" in err and "without label images" in err


def test_every_problem_is_reported_at_once(folders, capsys):
    tifffile.imwrite(folders / "labels" / "a.tif", np.zeros((48, 48), np.uint8))
    tifffile.imwrite(folders / "labels" / "b.tif", np.ones((20, 20), np.uint8))
    rc, err = _run(folders, capsys)
    assert rc == 2 and "2 of 2 few-shot reference pairs" in err
    assert str(folders / "labels" / "a.tif") in err and str(folders / "labels" / "b.tif") in err
    assert str(folders / "refs" / "b.tif") in err


def test_good_references_pass_and_grey_labels_saved_as_rgb_are_read(folders):
    grey = np.repeat((_disc() * 2)[..., None], 3, axis=-1)  # class 2, stored as an RGB image
    tifffile.imwrite(folders / "labels" / "b.tif", grey, photometric="rgb")
    job = Job(mode="fewshot", references=str(folders / "refs"), reference_labels=str(folders / "labels"))
    labels, images = fewshot_references(job)
    assert [np.unique(lab).tolist() for lab in labels] == [[0, 1], [0, 2]]
    assert all(lab.shape == im.shape[:2] == (48, 48) for lab, im in zip(labels, images))
    tifffile.imwrite(folders / "labels" / "a.tif", np.zeros((48, 48), np.uint8))
    with pytest.raises(ReferenceError, match="has no object"):
        fewshot_references(job)

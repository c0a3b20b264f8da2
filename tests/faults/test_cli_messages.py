"""Command-line faults: bad inputs, empty folders, bad prompt files and bad settings give one clear line that
says what to do; --precision reaches the job, its fingerprint and the engines."""
from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import numpy as np
import pytest
import tifffile

import napari_granseg.batch as batch
from napari_granseg.batch import Job, ModelRef, Prompt, segment_with_prompts
from napari_granseg.cli import main


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("granseg: error: ") and "Traceback" not in err, err
    return err


def test_empty_folder_says_what_was_looked_for(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "empty" / "sub" / "deep.tif", np.zeros((16, 16), np.uint8))
    before = snapshot(tmp_path)
    assert main(["segment", str(tmp_path / "empty"), "--no-progress"]) == 2
    err = one_error_line(capsys)
    assert "no images found" in err and ".tif" in err and "--recursive" in err
    assert snapshot(tmp_path) == before


def test_missing_input_names_the_path(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "nope.tif"), "--no-progress"]) == 2
    err = one_error_line(capsys)
    assert str(tmp_path / "nope.tif") in err and "does not exist" in err


@pytest.mark.parametrize("text, expected", [
    ("image,row,col\na.tif,1,nan\n", "line 2: col 'nan' is not a finite number"),
    ("image,row,col\na.tif,inf,1\n", "line 2: row 'inf' is not a finite number"),
    ("row,col\n1,2\n", "line 2: no image name"),
    ("image,row,col,object\na.tif,4,4,0\n", "line 2: object 0 must be 1 or more"),
])
def test_bad_prompt_file_is_one_line_with_the_line_number_and_the_format(tmp_path, capsys, text, expected):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((16, 16), np.uint8))
    (tmp_path / "p.csv").write_text(text)
    before = snapshot(tmp_path)
    assert main(["segment", str(tmp_path / "a.tif"), "--prompts", str(tmp_path / "p.csv"), "--no-progress"]) == 2
    err = one_error_line(capsys)
    assert expected in err and "docs/batch.md" in err
    assert snapshot(tmp_path) == before


def test_stack_that_cannot_be_opened_is_one_line(tmp_path, capsys):
    (tmp_path / "broken.zarr").mkdir()
    assert main(["segment", str(tmp_path / "broken.zarr"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = one_error_line(capsys)
    assert "broken.zarr" in err and "cannot open as a stack" in err


def test_click_outside_the_image_fails_that_image_with_the_reason(tmp_path):
    with pytest.raises(ValueError, match=r"outside the image of 16 x 16 pixels"):
        segment_with_prompts(np.zeros((16, 16), np.uint8), [Prompt(3, 40)], model=object())


def test_only_negative_clicks_fail_that_image_like_gs_segment(tmp_path):
    with pytest.raises(ValueError, match="no positive click"):
        segment_with_prompts(np.zeros((16, 16), np.uint8), [Prompt(3, 4, label=0)], model=object())


def test_unknown_precision_is_refused(capsys):
    with pytest.raises(SystemExit) as info:
        main(["segment", "x.tif", "--precision", "fp16"])
    assert info.value.code == 2 and "fp16" in capsys.readouterr().err
    with pytest.raises(ValueError, match="precision='half' is not one of"):
        Job(precision="half")


def test_precision_is_part_of_the_job_and_its_fingerprint(tmp_path, monkeypatch):
    seen = {}

    def fake_run_folder(inputs, out, job, **kw):
        seen["job"] = job
        return batch.BatchReport()

    monkeypatch.setattr(batch, "run_folder", fake_run_folder)
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((16, 16), np.uint8))
    (tmp_path / "p.csv").write_text("image,row,col\na.tif,3,3\n")
    assert main(["segment", str(tmp_path / "a.tif"), "--prompts", str(tmp_path / "p.csv"), "--precision", "fp32",
                 "--no-progress"]) == 0
    job = seen["job"]
    assert job.precision == "fp32" and job.engine_options() == {"precision": "fp32"}
    auto = Job(mode="prompts", prompts=job.prompts)
    assert auto.core()["precision"] == "auto" and job.core()["precision"] == "fp32"
    assert batch.fingerprint(auto.core()) != batch.fingerprint(job.core())  # fp32 outputs are recomputed


def test_precision_is_passed_to_gs_segment(monkeypatch):
    import napari_granseg.api as api

    calls = []

    def fake_segment(image, points, granularity=0.5, model=None, labels=None, **kw):
        calls.append(kw)
        return np.zeros(np.asarray(image).shape[:2], np.int32)

    monkeypatch.setattr(api, "segment", fake_segment)
    image = np.zeros((16, 16), np.uint16)
    job = Job(mode="prompts", prompts={"a.tif": [(3, 3)]}, precision="fp32")
    batch.segment_image(image, job, [Prompt(3, 3)], model=object())
    batch.segment_image(image, Job(mode="prompts", prompts=job.prompts), [Prompt(3, 3)], model=object(),
                        intensity=(10.0, 900.0))
    assert calls == [{"precision": "fp32"}, {"intensity": (10.0, 900.0)}]


def test_precision_reaches_the_few_shot_segmenter(monkeypatch, tmp_path):
    from napari_granseg.engine import fewshot

    made = {}

    class Recording:
        def __init__(self, model, image_size=640, **kw):
            made.update(image_size=image_size, **kw)

        def iter_segment_classes(self, targets, labels, reference_images=None):
            for t in targets:
                yield np.zeros(t.shape[:2], np.int32)

    monkeypatch.setattr(fewshot, "FewShotSegmenter", Recording)
    for sub in ("r", "l"):
        (tmp_path / sub).mkdir()
    tifffile.imwrite(tmp_path / "r" / "a.tif", np.zeros((16, 16), np.uint8))
    tifffile.imwrite(tmp_path / "l" / "a.tif", np.ones((16, 16), np.uint8))
    job = Job(mode="fewshot", references=str(tmp_path / "r"), reference_labels=str(tmp_path / "l"),
              image_size=518, precision="bf16")
    out = batch.segment_image(np.zeros((16, 16), np.uint8), job, model=object())
    assert made == {"image_size": 518, "precision": "bf16"} and out.shape == (16, 16)


@pytest.mark.skipif("precision" not in inspect.signature(__import__("napari_granseg.api").api.segment).parameters,
                    reason="needs precision= in engines (merge)")
def test_fp32_run_gives_the_labels_of_gs_segment_at_fp32(tmp_path):
    import torch

    import napari_granseg as gs
    from napari_granseg.checkpoints import save_checkpoint
    from napari_granseg.synthetic import nested_cells_scene

    torch.manual_seed(0)
    model = gs.load_model(None, kind="unsamv2", config="granseg_tiny.yaml", device="cpu")
    ckpt = save_checkpoint(model.module.state_dict(), tmp_path / "m.pt")
    scene = nested_cells_scene(size=64, n_cells=2, seed=3)
    tifffile.imwrite(tmp_path / "a.tif", scene.image)
    ref = ModelRef(str(ckpt), kind="unsamv2", config="granseg_tiny.yaml", device="cpu")
    pts = [(float(r), float(c)) for r, c in scene.centers]
    job = Job(mode="prompts", prompts={"a.tif": pts}, model=ref, precision="fp32")
    report = batch.run_folder(tmp_path / "a.tif", tmp_path / "o", job, progress=False)
    assert report.ok and len(report.done) == 1
    expected = gs.segment(scene.image, points=pts, model=batch.worker_model(ref.resolved()), precision="fp32")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o" / "a_labels.tif"), expected)

"""Folder runs: one label image per input with the labels gs.segment gives, resume, bad files, interruptions."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

import napari_granseg as gs
from napari_granseg import io as gio
from napari_granseg.batch import Job, run_folder


def _job(model_ref, folder, **kw):
    return Job(mode="prompts", prompts=str(folder / "prompts.csv"), granularity=kw.pop("granularity", 0.5),
               model=model_ref, **kw)


def _expected(scene, model, g=0.5):
    pts = [(float(f"{r:.2f}"), float(f"{c:.2f}")) for r, c in scene.centers]
    return gs.segment(scene.image, points=pts, granularity=g, model=model)


def test_folder_run_writes_the_labels_of_gs_segment(image_folder, tmp_path, model_ref, tiny_model, temp_files):
    folder, scenes = image_folder
    out = tmp_path / "out"
    report = run_folder(folder, out, _job(model_ref, folder), progress=False)
    assert report.ok and len(report.done) == 4 and not report.skipped
    assert sorted(p.name for p in out.iterdir()) == [f"img_{i:03d}_labels.tif" for i in range(4)]
    for name, scene in scenes.items():
        labels = tifffile.imread(out / name.replace(".tif", "_labels.tif"))
        expected = _expected(scene, tiny_model)
        assert expected.max() >= 1
        np.testing.assert_array_equal(labels, expected)
        meta = gio.read_labels_metadata(out / name.replace(".tif", "_labels.tif"))
        assert meta["source"] == name and meta["mode"] == "prompts" and len(meta["granseg_fingerprint"]) == 16
    assert not temp_files(out)


def test_outputs_next_to_inputs_are_not_taken_as_inputs(image_folder, model_ref):
    folder, _ = image_folder
    first = run_folder(folder, None, _job(model_ref, folder), progress=False)
    assert len(first.done) == 4 and (folder / "img_000_labels.tif").is_file()
    again = run_folder(folder, None, _job(model_ref, folder), progress=False)
    assert len(again.done) == 0 and len(again.skipped) == 4  # *_labels.tif were not segmented themselves


def test_resume_skips_finished_items(image_folder, tmp_path, model_ref):
    folder, _ = image_folder
    out = tmp_path / "out"
    run_folder(folder, out, _job(model_ref, folder), progress=False)
    stamps = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    (out / "img_002_labels.tif").unlink()
    processed = []
    report = run_folder(folder, out, _job(model_ref, folder), progress=False, on_result=processed.append)
    assert [r["input"] for r in processed] == [str(folder / "img_002.tif")]
    assert len(report.done) == 1 and len(report.skipped) == 3
    for p in out.iterdir():
        if p.name != "img_002_labels.tif":
            assert (p.stat().st_mtime_ns, p.read_bytes()) == stamps[p.name]  # untouched
    assert (out / "img_002_labels.tif").read_bytes() == stamps["img_002_labels.tif"][1]  # same result again


def test_same_name_from_another_folder_is_not_taken_as_finished(tmp_path, model_ref, tiny_model,
                                                               image_folder_maker):
    """Two folders that both hold img_000.tif, run one after the other into one --out: the second run computes
    its own images; it never keeps the first folder's labels for them."""
    make_folder = image_folder_maker
    first, second = tmp_path / "first", tmp_path / "second"
    make_folder(first, n=2, size=64, seed=0)
    scenes = make_folder(second, n=2, size=64, seed=7)
    out = tmp_path / "out"
    run_folder(first, out, _job(model_ref, first), progress=False)
    report = run_folder(second, out, _job(model_ref, second), progress=False)
    assert len(report.done) == 2 and not report.skipped
    for name, scene in scenes.items():
        got = tifffile.imread(out / name.replace(".tif", "_labels.tif"))
        np.testing.assert_array_equal(got, _expected(scene, tiny_model))
    again = run_folder(second, out, _job(model_ref, second), progress=False)
    assert len(again.skipped) == 2  # the same input again is finished


def test_changed_job_recomputes(image_folder, tmp_path, model_ref, tiny_model):
    folder, scenes = image_folder
    out = tmp_path / "out"
    run_folder(folder, out, _job(model_ref, folder, granularity=0.5), progress=False)
    report = run_folder(folder, out, _job(model_ref, folder, granularity=1.0), progress=False)
    assert len(report.done) == 4 and not report.skipped
    scene = scenes["img_001.tif"]
    np.testing.assert_array_equal(tifffile.imread(out / "img_001_labels.tif"), _expected(scene, tiny_model, 1.0))


def test_bad_file_in_the_middle_is_reported_and_earlier_outputs_kept(image_folder, tmp_path, model_ref, temp_files):
    folder, _ = image_folder
    out = tmp_path / "out"
    run_folder(folder, out, _job(model_ref, folder), progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (folder / "img_001b.tif").write_bytes(b"II*\x00 this is not a tiff" * 3)  # sorts between 001 and 002
    (folder / "img_005.tif").write_bytes(tifffile.imread(folder / "img_000.tif").tobytes()[:100])  # garbage
    with open(folder / "prompts.csv", "a") as f:
        f.write("img_001b.tif,10,10\nimg_005.tif,20,20\n")
    report = run_folder(folder, out, _job(model_ref, folder), progress=False)
    failed = {r["input"].split("/")[-1]: r["error"] for r in report.failed}
    assert set(failed) == {"img_001b.tif", "img_005.tif"}
    assert all("cannot read image" in e for e in failed.values())
    assert not report.ok and len(report.skipped) == 4  # prompts of the others unchanged -> finished
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert "failed" in report.summary() and "img_001b.tif" in report.summary()
    assert not temp_files(out)


def test_bad_file_in_a_fresh_run_does_not_stop_the_others(image_folder, tmp_path, model_ref):
    folder, _ = image_folder
    (folder / "img_001b.tif").write_bytes(b"not an image")
    with open(folder / "prompts.csv", "a") as f:
        f.write("img_001b.tif,10,10\n")
    report = run_folder(folder, tmp_path / "out", _job(model_ref, folder), progress=False)
    assert len(report.done) == 4 and len(report.failed) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"img_{i:03d}_labels.tif" for i in range(4)]


def test_interrupted_run_leaves_only_complete_outputs_and_resumes(image_folder, tmp_path, model_ref, temp_files):
    folder, _ = image_folder
    out = tmp_path / "out"

    def stop_after_two(result, seen=[]):
        seen.append(result)
        if len(seen) == 2:
            raise KeyboardInterrupt  # what Ctrl-C does between items

    with pytest.raises(KeyboardInterrupt):
        run_folder(folder, out, _job(model_ref, folder), progress=False, on_result=stop_after_two)
    written = sorted(p.name for p in out.iterdir())
    assert written == ["img_000_labels.tif", "img_001_labels.tif"]
    assert not temp_files(out)
    processed = []
    report = run_folder(folder, out, _job(model_ref, folder), progress=False, on_result=processed.append)
    assert len(processed) == 2 and len(report.skipped) == 2 and report.ok


def test_crash_while_writing_leaves_no_partial_output(image_folder, tmp_path, model_ref, monkeypatch, temp_files):
    folder, _ = image_folder
    out = tmp_path / "out"
    run_folder(folder, out, _job(model_ref, folder), progress=False)
    good = (out / "img_003_labels.tif").read_bytes()
    real = tifffile.imwrite

    def dies_half_way(path, data, **kw):
        real(path, data, **kw)
        with open(path, "r+b") as f:
            f.truncate(50)  # half a file on disk, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", dies_half_way)
    report = run_folder(folder, out, _job(model_ref, folder, overwrite=True), progress=False)
    assert len(report.failed) == 4 and all("disk full" in r["error"] for r in report.failed)
    assert (out / "img_003_labels.tif").read_bytes() == good  # old result intact, not half-overwritten
    assert not temp_files(out)


def test_no_inputs_is_a_clear_error(tmp_path, model_ref):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images found"):
        run_folder(tmp_path / "empty", tmp_path / "out", Job(mode="whole", model=model_ref), progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_folder(tmp_path / "nope", tmp_path / "out", Job(mode="whole", model=model_ref), progress=False)


def test_images_without_prompts_are_skipped_with_a_reason(image_folder, tmp_path, model_ref):
    folder, _ = image_folder
    lines = (folder / "prompts.csv").read_text().splitlines()
    (folder / "p2.csv").write_text("\n".join([lines[0]] + [l for l in lines[1:] if l.startswith("img_000")]))
    report = run_folder(folder, tmp_path / "out", Job(mode="prompts", prompts=str(folder / "p2.csv"),
                                                      model=model_ref), progress=False)
    assert len(report.done) == 1 and len(report.skipped) == 3
    assert {r["reason"] for r in report.skipped} == {"no prompts for this image"}
    # a row naming an image that is not an input: tests/faults/test_prompt_images.py (refused before any work)


def test_whole_image_mode(image_folder, tmp_path, model_ref, tiny_model):
    pytest.importorskip("napari_granseg.engine.automatic")
    folder, scenes = image_folder
    settings = {"points_per_side": 4, "points_per_batch": 16, "pred_iou_thresh": 0.0,
                "stability_score_thresh": 0.0, "use_m2m": False}
    job = Job(mode="whole", granularity=0.5, model=model_ref, settings=settings)
    report = run_folder([folder / "img_000.tif", folder / "img_001.tif"], tmp_path / "out", job, progress=False)
    assert report.ok and len(report.done) == 2
    for name in ("img_000", "img_001"):
        expected = gs.segment_everything(scenes[f"{name}.tif"].image, granularity=0.5, model=tiny_model, **settings)
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / f"{name}_labels.tif"), expected)

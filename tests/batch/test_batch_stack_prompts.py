"""Stacks streamed slice by slice into zarr, and the prompt file formats."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import zarr

import napari_granseg as gs
from napari_granseg import io as gio
from napari_granseg.batch import Job, Prompt, PromptFileError, read_prompts, run_stack, segment_with_prompts
from napari_granseg.synthetic import nested_cells_stack


@pytest.fixture
def stack_file(tmp_path, as_uint8):
    stack, scenes = nested_cells_stack(n_slices=4, size=96, seed=1, drift=2.0)
    stack = as_uint8(stack)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack)
    rows = ["image,slice,row,col,granularity"] + [f"stack.tif,{z},{s.centers[0][0]:.1f},{s.centers[0][1]:.1f},0.8"
                                                  for z, s in enumerate(scenes)]
    (tmp_path / "stack_prompts.csv").write_text("\n".join(rows))
    return path, stack, scenes


def test_open_stack_is_lazy_and_chunked_per_slice(stack_file):
    path, stack, _ = stack_file
    arr = gio.open_stack(path)
    assert arr.shape == stack.shape and arr.chunks[0] == (1, 1, 1, 1)
    np.testing.assert_array_equal(arr[2].compute(), stack[2])
    assert gio.stack_shape(path) == stack.shape


def test_stack_to_zarr_matches_per_slice_segmentation_and_resumes(stack_file, tmp_path, model_ref, tiny_model):
    path, stack, scenes = stack_file
    job = Job(mode="prompts", prompts=str(tmp_path / "stack_prompts.csv"), model=model_ref)
    out = tmp_path / "stack_labels.zarr"
    report = run_stack(path, out, job, progress=False)
    assert report.ok and len(report.done) == 4
    labels = zarr.open_group(str(out), mode="r")["labels"]
    assert labels.shape == stack.shape and labels.chunks == (1, 96, 96)
    for z, scene in enumerate(scenes):
        r, c = (float(f"{v:.1f}") for v in scene.centers[0])
        expected = gs.segment(stack[z], points=[(r, c)], granularity=0.8, model=tiny_model)
        assert expected.max() == 1
        np.testing.assert_array_equal(labels[z], expected)
    # resume: clear two slices' done flags (as if the run had died before them): only those are recomputed
    store = gio.LabelsZarr.open(out)
    store.group["done"][1] = 0
    store.group["done"][3] = 0
    processed = []
    again = run_stack(path, out, job, progress=False, on_result=processed.append)
    assert sorted(r["index"] for r in processed) == [1, 3] and len(again.skipped) == 2
    assert gio.LabelsZarr.open(out).done_indices() == [0, 1, 2, 3]
    # a different job on the same store needs overwrite
    with pytest.raises(FileExistsError, match="overwrite"):
        run_stack(path, out, Job(mode="prompts", prompts=job.prompts, granularity=0.3, model=model_ref),
                  progress=False)


def test_interrupted_stack_run_marks_only_written_slices(stack_file, tmp_path, model_ref):
    path, _, _ = stack_file
    job = Job(mode="prompts", prompts=str(tmp_path / "stack_prompts.csv"), model=model_ref)
    out = tmp_path / "s.zarr"

    def stop(result, seen=[]):
        seen.append(result)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stack(path, out, job, progress=False, on_result=stop)
    store = gio.LabelsZarr.open(out)
    assert store.done_indices() == [0, 1, 2]
    assert int(np.asarray(store.labels[3]).max()) == 0  # never written
    assert len(run_stack(path, out, job, progress=False).done) == 1


def test_whole_mode_stack(stack_file, tmp_path, model_ref, tiny_model):
    pytest.importorskip("napari_granseg.engine.automatic")
    path, stack, _ = stack_file
    settings = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "use_m2m": False}
    out = tmp_path / "w.zarr"
    report = run_stack(path, out, Job(mode="whole", model=model_ref, settings=settings), progress=False)
    assert report.ok and len(report.done) == 4
    expected = gs.segment_everything(stack[2], granularity=0.5, model=tiny_model, **settings)
    np.testing.assert_array_equal(gio.open_stack(out)[2].compute(), expected)


def test_single_image_is_not_a_stack(tmp_path, model_ref):
    tifffile.imwrite(tmp_path / "one.tif", np.zeros((32, 32), np.uint16))
    with pytest.raises(ValueError, match="not a stack"):
        run_stack(tmp_path / "one.tif", tmp_path / "o.zarr", Job(mode="whole", model=model_ref), progress=False)


# ------------------------------------------------------------------------------------------------ prompt files
def test_csv_and_json_prompt_files_read_the_same(tmp_path):
    csv_text = "# comment\nimage,row,col,granularity,object,label\na.tif,10,20,0.3,1,1\na.tif,12,22,,1,0\nb.tif,5.5,6,,,\n"
    (tmp_path / "p.csv").write_text(csv_text)
    records = [{"image": "a.tif", "row": 10, "col": 20, "granularity": 0.3, "object": 1, "label": 1},
               {"image": "a.tif", "row": 12, "col": 22, "object": 1, "label": 0},
               {"image": "b.tif", "row": 5.5, "col": 6}]
    (tmp_path / "p.json").write_text(json.dumps(records))
    (tmp_path / "q.json").write_text(json.dumps({"a.tif": records[:1] + [dict(records[1], image=None)],
                                                 "b.tif": [[5.5, 6]]}))
    expected = {"a.tif": [Prompt(10, 20, 0.3, 1, 1), Prompt(12, 22, None, 1, 0)], "b.tif": [Prompt(5.5, 6)]}
    assert read_prompts(tmp_path / "p.csv") == expected
    assert read_prompts(tmp_path / "p.json") == expected
    assert read_prompts(tmp_path / "q.json") == expected
    assert read_prompts({"b.tif": [(5.5, 6)]}) == {"b.tif": [Prompt(5.5, 6)]}


@pytest.mark.parametrize("text, message", [
    ("image,row,col\na.tif,1,x\n", "line 2: col 'x' is not a number"),
    ("image,row,col\na.tif,1,2\n\na.tif,1\n", "line 4: 2 values for 3 columns"),
    ("image,row,col,granularity\na.tif,1,2,3\n", r"line 2: granularity \[3.0\] is outside \[0.1, 1\]"),
    ("a.tif,1,2\n", "line 1: expected a header"),
    ("image,row,col,label\na.tif,1,2,5\n", "line 2: label 5 must be 1"),
    ('[{"image": "a.tif", "row": 1,\n "col": }]', "line 2: invalid JSON"),
])
def test_bad_prompt_file_names_the_line(tmp_path, text, message):
    path = tmp_path / ("p.json" if text.startswith("[") else "p.csv")
    path.write_text(text)
    with pytest.raises(PromptFileError, match=message):
        read_prompts(path)


def test_points_of_one_object_make_one_label(image_folder, tiny_model):
    folder, scenes = image_folder
    scene = scenes["img_000.tif"]
    (r0, c0), (r1, c1) = scene.centers
    single = segment_with_prompts(scene.image, [Prompt(r0, c0), Prompt(r1, c1)], model=tiny_model)
    np.testing.assert_array_equal(single, gs.segment(scene.image, [(r0, c0), (r1, c1)], 0.5, model=tiny_model))
    grouped = segment_with_prompts(scene.image, [Prompt(r0, c0, object_id=7), Prompt(r1, c1, object_id=7)],
                                   model=tiny_model)
    assert set(np.unique(grouped)) <= {0, 7} and (grouped == 7).any()

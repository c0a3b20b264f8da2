"""One intensity range per stack: every slice of a 16-bit stack is scaled alike, whichever worker segments it
(single images keep their own range)."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import tifffile
import zarr

import napari_granseg.api as api
from napari_granseg.batch import Job, run_stack, stack_intensity
from napari_granseg.engine.normalize import intensity_range


def _bright_and_dim(n=4, size=32):
    """A 16-bit stack whose slices have very different brightness (bleaching through a time series)."""
    rng = np.random.default_rng(0)
    return np.stack([rng.integers(100, 400 + 3000 * z, (size, size)) for z in range(n)]).astype(np.uint16)


def test_stack_range_is_the_range_of_the_whole_stack_not_of_a_slice(tmp_path):
    stack = _bright_and_dim()
    tifffile.imwrite(tmp_path / "s.tif", stack)
    lo, hi = stack_intensity(tmp_path / "s.tif")
    assert (lo, hi) == intensity_range(stack)
    assert hi > intensity_range(stack[0])[1] * 3  # the dim first slice alone would be stretched


def test_large_stacks_are_sampled_on_strided_slices(tmp_path):
    stack = np.concatenate([_bright_and_dim(n=20, size=16), _bright_and_dim(n=20, size=16)])
    z = zarr.open_array(str(tmp_path / "s.zarr"), mode="w", shape=stack.shape, chunks=(1, 16, 16), dtype="uint16")
    z[:] = stack
    picks = np.unique(np.linspace(0, 39, num=16).round().astype(int))
    assert stack_intensity(tmp_path / "s.zarr", max_slices=16) == intensity_range(stack[picks])


def test_uint8_stacks_keep_their_natural_range(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((3, 16, 16), np.uint8))
    assert stack_intensity(tmp_path / "s.tif") is None


def test_every_slice_is_segmented_with_the_stack_range(tmp_path, monkeypatch):
    stack = _bright_and_dim()
    tifffile.imwrite(tmp_path / "s.tif", stack)
    seen = []

    def recording_segment(image, points, granularity=0.5, model=None, labels=None, **kw):
        seen.append((int(np.asarray(image).max()), kw.get("intensity")))
        return np.zeros(np.asarray(image).shape[:2], np.int32)

    monkeypatch.setattr(api, "segment", recording_segment)
    prompts = {"s.tif": [{"row": 5, "col": 5, "slice": z} for z in range(4)]}
    report = run_stack(tmp_path / "s.tif", tmp_path / "o.zarr", Job(mode="prompts", prompts=prompts),
                       progress=False, model=object())
    assert report.ok and len(report.done) == 4
    assert [m for m, _ in seen] == [int(s.max()) for s in stack]
    assert {rng for _, rng in seen} == {intensity_range(stack)}


@pytest.mark.skipif("intensity" not in inspect.signature(api.segment).parameters,
                    reason="needs intensity= in engines (merge)")
def test_stack_labels_equal_gs_segment_with_the_stack_range(tmp_path, model_ref, tiny_model):
    from napari_granseg.synthetic import nested_cells_stack

    stack, scenes = nested_cells_stack(n_slices=3, size=64, seed=5)
    tifffile.imwrite(tmp_path / "s.tif", stack)
    pts = {z: (float(s.centers[0][0]), float(s.centers[0][1])) for z, s in enumerate(scenes)}
    prompts = {"s.tif": [{"row": r, "col": c, "slice": z} for z, (r, c) in pts.items()]}
    run_stack(tmp_path / "s.tif", tmp_path / "o.zarr", Job(mode="prompts", prompts=prompts, model=model_ref),
              progress=False)
    labels = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")["labels"]
    rng = intensity_range(stack)
    for z, p in pts.items():
        expected = api.segment(stack[z], points=[p], model=tiny_model, intensity=rng)
        np.testing.assert_array_equal(labels[z], expected)

"""Stacks larger than memory: every stack engine reads one slice at a time.

The stack is a dask array over :class:`SliceGuard`, which refuses any read of more than one slice, refuses
``np.asarray`` of itself, and (with :class:`OneReadPerCompute`) refuses a dask computation that reads more
than one slice: materialising the stack whole raises. Each engine's result must equal its in-memory numpy run,
and the number of slice reads is bounded by one pass (plus the <= 16-slice sample of the intensity range).
"""
from __future__ import annotations

import numpy as np
import pytest
import zarr
from dask.callbacks import Callback

from napari_granseg.engine.normalize import STACK_SAMPLE_SLICES, stack_intensity_range
from napari_granseg.synthetic import nested_cells_stack, shapes_scene

N_SLICES = 20  # > 16, so one extra whole read could not hide inside the intensity sample's budget


class SliceGuard:
    """An array-like (shape, dtype, ndim, indexing) over ``data`` that reads at most one slice at a time."""

    def __init__(self, data):
        self.data = data
        self.shape, self.dtype, self.ndim = tuple(data.shape), np.dtype(data.dtype), len(data.shape)
        self.reads = 0
        self.reads_in_compute = 0

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole stack was materialised")

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        first = key[0] if isinstance(key, tuple) else key
        if isinstance(first, (int, np.integer)):
            n = 1
        elif isinstance(first, slice):
            n = len(range(*first.indices(self.shape[0])))
        else:
            raise AssertionError(f"read of several slices at once: {key!r}")
        if n > 1:
            raise AssertionError(f"read of {n} slices at once: {key!r}")
        if n:
            self.reads += 1
            self.reads_in_compute += 1
            if self.reads_in_compute > 1:
                raise AssertionError("one dask computation read more than one slice (the stack was materialised)")
        return np.asarray(self.data[key])


class OneReadPerCompute(Callback):
    """Resets the guards' per-computation counts when dask starts computing something."""

    def __init__(self, guards: SliceGuard | list[SliceGuard]):
        super().__init__()
        self.guards = guards if isinstance(guards, list) else [guards]

    def _start(self, dsk):
        for guard in self.guards:
            guard.reads_in_compute = 0


def lazy(data) -> tuple["dask.array.Array", SliceGuard]:  # noqa: F821
    import dask.array as da

    guard = SliceGuard(data)
    return da.from_array(guard, chunks=(1,) + guard.shape[1:], asarray=False), guard


@pytest.fixture(autouse=True)
def one_thread_dask():
    """dask's synchronous scheduler: a computation that fails stops at once (with threads, tasks of a failed
    whole-stack read can still be reading when the next computation starts, and be counted against it)."""
    import dask

    with dask.config.set(scheduler="synchronous"):
        yield


def test_the_guard_refuses_a_whole_read():
    stack, guard = lazy(np.zeros((N_SLICES, 8, 8), np.uint16))
    with OneReadPerCompute(guard), pytest.raises(AssertionError, match="materialised"):
        np.asarray(stack)
    with OneReadPerCompute(guard):
        assert np.asarray(stack[3]).shape == (8, 8)
        assert stack_intensity_range(stack) is not None  # the sample is read slice by slice
    with pytest.raises(AssertionError, match="2 slices"):
        guard[0:2]


@pytest.fixture(scope="module")
def cells():
    stack, scenes = nested_cells_stack(n_slices=N_SLICES, size=96, seed=3)
    assert stack.dtype == np.uint16
    return stack, scenes


@pytest.fixture(scope="module")
def unsamv2_demo():
    import napari_granseg as gs

    return gs.load_model("unsamv2-demo", device="cpu")


def test_propagation_reads_and_writes_one_frame_at_a_time(cells, unsamv2_demo):
    from napari_granseg.engine.propagate import ObjectPrompt, propagate

    stack, scenes = cells
    row, col = scenes[N_SLICES // 2].centers[0]
    prompt = ObjectPrompt(frame=N_SLICES // 2, points=[[col, row]])
    expected = propagate(unsamv2_demo, stack, prompt, granularity=1.0, precision="fp32")
    assert (expected == 1).sum(axis=(1, 2)).min() > 50  # the cell is followed on every slice
    data, guard = lazy(stack)
    out = zarr.zeros(shape=stack.shape, chunks=(1,) + stack.shape[1:], dtype="int32")
    with OneReadPerCompute(guard):
        got = propagate(unsamv2_demo, data, prompt, granularity=1.0, precision="fp32", out=out)
    assert got is out
    np.testing.assert_array_equal(out[:], expected)
    # SAM 2 reads the warm-up frame and the prompted frame once more; the range samples <= 16 slices
    assert guard.reads <= N_SLICES + 3 + STACK_SAMPLE_SLICES


def test_segment_everything_stack_writes_into_a_zarr_array(cells, unsamv2_demo):
    from napari_granseg.engine.automatic import segment_everything_stack
    from napari_granseg.engine.interactive import GranularityPredictor

    stack, _ = cells
    stack = stack[:6]  # slow engine: fewer slices, same guard
    pred = GranularityPredictor(unsamv2_demo, precision="fp32")
    expected = segment_everything_stack(pred, stack, granularity=1.0, points_per_side=6)
    assert all(expected[z].any() for z in range(len(stack)))  # cells found on every slice
    data, guard = lazy(stack)
    out = zarr.zeros(shape=stack.shape, chunks=(1,) + stack.shape[1:], dtype="int32")
    with OneReadPerCompute(guard):
        segment_everything_stack(pred, data, granularity=1.0, points_per_side=6, out=out)
    np.testing.assert_array_equal(out[:], expected)
    assert guard.reads <= len(stack) + STACK_SAMPLE_SLICES


@pytest.fixture(scope="module")
def shapes_series():
    rng = np.random.default_rng(11)
    scenes = [shapes_scene(size=96, n_objects=5, rng=rng) for _ in range(N_SLICES + 1)]
    images = np.stack([im for im, _ in scenes])
    labels = np.stack([lab for _, lab in scenes])
    return images, labels


def test_fewshot_over_a_lazy_series_reads_one_target_at_a_time(shapes_series):
    import napari_granseg as gs
    from napari_granseg.engine.fewshot import FewShotSegmenter

    images, labels = shapes_series
    fs = FewShotSegmenter(gs.load_model("sansa-demo", device="cpu"), image_size=None, precision="fp32")
    fs.add_reference(images[0], mask=labels[0] == 1)
    targets = images[1:]
    expected = [r.mask for r in fs.segment_many(targets)]
    expected_classes = fs.segment_classes(list(targets), [labels[0]])
    assert np.mean([((e & (t == 1)).sum() / max((e | (t == 1)).sum(), 1)) for e, t in
                    zip(expected, labels[1:])]) > 0.3  # the class is found, not an empty run
    data, guard = lazy(targets)
    with OneReadPerCompute(guard):
        got = [r.mask for r in fs.segment_many(data)]
        got_classes = list(fs.iter_segment_classes(data, [labels[0]]))
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g, e)
    for e, g in zip(expected_classes, got_classes):
        np.testing.assert_array_equal(g, e)
    assert guard.reads == 2 * len(targets)


def test_api_segment_on_a_lazy_stack_reads_the_clicked_slice_and_the_sample(cells, unsamv2_demo):
    import napari_granseg as gs

    stack, scenes = cells
    z = 7
    row, col = scenes[z].centers[-1]
    expected = gs.segment(stack, points=[(z, row, col)], granularity=1.0, model=unsamv2_demo, precision="fp32")
    assert expected.shape == stack.shape and (expected[z] == 1).sum() > 50 and not expected[z + 1].any()
    data, guard = lazy(stack)
    with OneReadPerCompute(guard):
        got = gs.segment(data, points=[(z, row, col)], granularity=1.0, model=unsamv2_demo, precision="fp32")
    np.testing.assert_array_equal(np.asarray(got), expected)
    assert guard.reads <= 1 + STACK_SAMPLE_SLICES


def test_batch_run_stack_reads_one_zarr_slice_per_task(cells, unsamv2_demo, tmp_path, monkeypatch):
    """``run_stack`` on a zarr store whose lazy view raises when materialised: per-slice labels equal
    ``gs.segment_everything`` on each in-memory slice with the stack's range."""
    import napari_granseg as gs
    from napari_granseg.batch import Job, ModelRef, inputs, run_stack

    stack, _ = cells
    stack = stack[:4]
    src = tmp_path / "stack.zarr"
    zarr.create_array(store=str(src), shape=stack.shape, chunks=(1,) + stack.shape[1:], dtype=stack.dtype)[:] = stack
    guards = []

    def guarded_open(path):
        data, guard = lazy(zarr.open_array(str(path), mode="r"))
        guards.append(guard)
        return data

    monkeypatch.setattr(inputs, "open_stack", guarded_open)
    job = Job(mode="whole", granularity=1.0, model=ModelRef("unsamv2-demo", device="cpu"),
              settings={"points_per_side": 6}, precision="fp32")
    with OneReadPerCompute(guards):
        report = run_stack(src, tmp_path / "labels.zarr", job, progress=False, model=unsamv2_demo)
    assert report.ok and len(report.done) == len(stack), report.summary()
    (guard,) = guards
    assert guard.reads <= len(stack) + STACK_SAMPLE_SLICES
    got = zarr.open_group(str(tmp_path / "labels.zarr"), mode="r")["labels"][:]
    intensity = stack_intensity_range(stack)
    for z in range(len(stack)):
        expected = gs.segment_everything(stack[z], granularity=1.0, model=unsamv2_demo, precision="fp32",
                                         intensity=intensity, points_per_side=6)
        assert expected.max() >= 1
        np.testing.assert_array_equal(got[z], expected)

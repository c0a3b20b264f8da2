"""Few-shot over a series larger than memory, from the widget: a stack backed by dask that raises if read whole
is segmented one slice at a time, with the stack's one intensity range, into a zarr-backed Labels layer."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

sys.path.insert(0, str(Path(__file__).parent))  # person_path.py: the helpers shared by these tests
from person_path import OneSliceAtATime, open_widget

pytestmark = pytest.mark.gui

NAME = "Few-shot series (SANSA)"


def test_a_dask_series_is_read_one_slice_at_a_time_into_a_zarr_layer(make_napari_viewer, qtbot, no_cached_models,
                                                                      monkeypatch):
    import zarr

    from napari_granseg.engine.fewshot import FewShotSegmenter
    from napari_granseg.engine.normalize import stack_intensity_range
    from napari_granseg.synthetic import shapes_scene
    from napari_granseg.widgets import _layer_pixels
    from napari_granseg.widgets.fewshot import FewShotWidget

    rng = np.random.default_rng(5)
    scenes = [shapes_scene(size=256, n_objects=4, rng=rng) for _ in range(3)]
    images = np.stack([s[0] for s in scenes]).astype(np.uint16) * 200  # 16-bit: the stack's range matters
    truth = np.stack([s[1] for s in scenes])
    refs = np.zeros_like(truth, dtype=np.int32)
    refs[0] = truth[0] == 1  # discs painted on slice 0 only
    stack = OneSliceAtATime(images)
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="series", contrast_limits=(0, 51000))
    viewer.add_labels(refs.copy(), name="refs")
    w = open_widget(viewer, NAME, "dock", FewShotWidget)
    monkeypatch.setattr(_layer_pixels, "LARGE_LABELS_BYTES", 1000)  # this small series counts as large
    w.size_combo.setCurrentText("model size")
    w.precision.setCurrentText("fp32")
    qtbot.mouseClick(w.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not w.busy, timeout=300_000)
    assert w.last_error == "", w.last_error
    layer = viewer.layers["refs few-shot"]
    assert isinstance(layer.data, zarr.Array) and Path(layer.metadata["store"]).is_dir()
    assert layer.metadata["store"] in w.status.text()
    out = np.asarray(layer.data[:])
    np.testing.assert_array_equal(out[0], refs[0])
    assert w.segmenter.precision == "fp32" and w._done == 2
    # exactly what the engine gives on the whole stack in memory, with the stack's one intensity range
    fs = FewShotSegmenter(w.segmenter.loaded, image_size=None, precision="fp32",
                          intensity_range=stack_intensity_range(images))
    assert fs.intensity_range == w.segmenter.intensity_range
    expected = fs.segment_classes([images[1], images[2]], [refs[0]], [images[0]])
    np.testing.assert_array_equal(out[1], expected[0])
    np.testing.assert_array_equal(out[2], expected[1])
    assert out[1:].any()

"""The napari widget: a 3-slice series with labels on slice 0 -> a new Labels layer on slices 1 and 2."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@pytest.fixture
def series():
    from napari_granseg.synthetic import shapes_scene

    rng = np.random.default_rng(4242)
    scenes = [shapes_scene(size=128, n_objects=3, rng=rng) for _ in range(3)]
    return np.stack([s[0] for s in scenes]), np.stack([s[1] for s in scenes])


def test_widget_segments_the_unlabelled_slices(make_napari_viewer, qtbot, trained_sansa, series):
    from napari_granseg.engine.fewshot import FewShotSegmenter
    from napari_granseg.engine.normalize import stack_intensity_range
    from napari_granseg.widgets.fewshot import FewShotWidget

    images, truth = series
    refs = np.zeros_like(truth)
    refs[0] = truth[0] == 1  # discs on slice 0 only
    viewer = make_napari_viewer()
    viewer.add_image(images, name="series")
    ref_layer = viewer.add_labels(refs.copy(), name="refs")
    widget = FewShotWidget(viewer)
    widget.set_model(trained_sansa)
    widget.size_combo.setCurrentText("model size")
    assert widget.image_combo.currentText() == "series" and widget.labels_combo.currentText() == "refs"
    worker = widget.run()
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert "DEMO" not in widget.model_badge.text() and widget.model_badge.text().endswith(trained_sansa.name)
    assert np.array_equal(ref_layer.data, refs)  # the user's references are untouched
    out = viewer.layers["refs few-shot"]
    assert out is widget.output_layer and out is not ref_layer
    assert np.array_equal(out.data[0], refs[0])
    assert out.data[1].any() and out.data[2].any()
    # the discs of the unlabelled slices rather than the triangles (the trained model reads the reference);
    # the same criterion as tests/fewshot/test_fewshot_behaviour.py, over both target slices
    pred, disc, tri = out.data[1:] == 1, truth[1:] == 1, truth[1:] == 2
    iou_disc = (pred & disc).sum() / (pred | disc).sum()
    iou_tri = (pred & tri).sum() / (pred | tri).sum()
    assert iou_disc > 0.5 and iou_disc > 2 * iou_tri, (iou_disc, iou_tri)
    # exactly what the napari-free engine gives for the same inputs
    fs = FewShotSegmenter(trained_sansa, image_size=None, intensity_range=stack_intensity_range(images))
    expected = fs.segment_classes([images[1], images[2]], [refs[0]], [images[0]])
    assert np.array_equal(out.data[1], expected[0]) and np.array_equal(out.data[2], expected[1])
    assert widget.segmenter is not None and widget._done == 2 and widget.progress.value() == 2


def test_widget_errors_are_notifications(make_napari_viewer, qtbot, trained_sansa, series):
    from qtpy.QtCore import Qt

    from napari_granseg.widgets import fewshot as mod

    viewer = make_napari_viewer()
    viewer.add_image(series[0][0], name="single")
    widget = mod.FewShotWidget(viewer)
    widget.set_model(trained_sansa)
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    assert "series" in widget.last_error and not widget.busy
    viewer.add_image(series[0], name="stack")
    viewer.add_labels(np.zeros(series[1].shape, np.int32), name="empty")
    widget.image_combo.setCurrentText("stack")
    widget.labels_combo.setCurrentText("empty")
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)  # found in the worker (it reads the labels)
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert "no labels on any slice" in widget.last_error and widget.output_layer is None
    widget.slices_edit.setText("0, 7")
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    assert "outside the series" in widget.last_error
    assert widget.run_button.isEnabled()
    assert mod.parse_slices("0, 2-3, -1", 6) == [0, 2, 3, 5]

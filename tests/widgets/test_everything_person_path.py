"""Segment everything as a person runs it: the widget opened from the Plugins menu or add_plugin_dock_widget, in
both orders (image first / widget first), Run pressed with the mouse, the bundled DEMO model as the default."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

sys.path.insert(0, str(Path(__file__).parent))  # person_path.py: the helpers shared by these tests
from person_path import best_iou, open_widget

pytestmark = pytest.mark.gui

NAME = "Segment everything (UnSAMv2)"


@pytest.mark.parametrize("how, order", [("dock", "image_first"), ("menu", "widget_first")])
def test_run_button_labels_the_cells_of_the_sample(make_napari_viewer, qtbot, no_cached_models, how, order):
    from napari_granseg.sample_data import nested_cells_sample_scene
    from napari_granseg.widgets.everything import EverythingWidget

    viewer = make_napari_viewer()
    if order == "image_first":
        viewer.open_sample("napari-granseg", "nested_cells")
    w = open_widget(viewer, NAME, how, EverythingWidget)
    if order == "widget_first":
        viewer.open_sample("napari-granseg", "nested_cells")
    assert w.image_combo.currentText() == "nested cells"
    # the default resolves (in a worker) to the bundled demo: DEMO shows before any run
    qtbot.waitUntil(lambda: "DEMO" in w.model_badge.text(), timeout=120_000)
    assert not w.export_button.isEnabled()
    w.granularity.setText("1.0")
    w.points.setValue(8)
    qtbot.mouseClick(w.run_button, Qt.LeftButton)
    assert not w.run_button.isEnabled()
    qtbot.waitUntil(lambda: not w.busy, timeout=300_000)
    assert w.last_error == ""
    assert [layer.name for layer in viewer.layers] == ["nested cells", "everything g=1"]
    labels = viewer.layers["everything g=1"].data
    scene = nested_cells_sample_scene()
    # whole objects at g=1: each of the three cells is matched by one label (the demo model is small: > 0.5)
    ious = [best_iou(labels, cell) for cell in scene.masks[2]]
    assert min(ious) > 0.5, ious
    assert w.export_button.isEnabled() and w.run_button.isEnabled()
    assert "DEMO" in w.model_badge.text()
    assert np.asarray(viewer.layers["nested cells"].data).dtype == np.uint16  # the image is untouched


def test_three_levels_are_added_as_three_layers_with_one_progress_bar(make_napari_viewer, qtbot, no_cached_models):
    from napari_granseg.widgets.everything import EverythingWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-granseg", "nested_cells")
    w = open_widget(viewer, NAME, "dock", EverythingWidget)
    w.granularity.setText("0.1, 0.5, 1.0")
    w.points.setValue(4)
    maxima = []
    w.progress.valueChanged.connect(lambda *_: maxima.append(w.progress.maximum()))
    qtbot.mouseClick(w.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not w.busy, timeout=300_000)
    assert [layer.name for layer in viewer.layers][1:] == ["everything g=0.1", "everything g=0.5", "everything g=1"]
    # one bar for the three levels: its total is three times a level's (never reset to one level's total)
    totals = {m for m in maxima if m > 0}
    assert len(totals) == 1, totals
    fine, coarse = (viewer.layers[f"everything g={g}"] for g in ("0.1", "1"))
    assert "parent_id" in fine.features.columns and fine.features["index"].tolist() == \
        list(range(1, int(fine.data.max()) + 1))
    assert int(coarse.data.max()) >= 1


def test_cancel_stops_the_run_and_adds_nothing(make_napari_viewer, qtbot, no_cached_models):
    from napari_granseg.widgets.everything import EverythingWidget

    viewer = make_napari_viewer()
    stack = np.stack([np.asarray(viewer.open_sample("napari-granseg", "nested_cells")[0].data)] * 6)
    viewer.layers.clear()
    viewer.add_image(stack, name="stack")
    w = open_widget(viewer, NAME, "dock", EverythingWidget)
    w.points.setValue(6)
    qtbot.mouseClick(w.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: w.progress.maximum() > 0 and w.progress.value() >= 1, timeout=300_000)
    assert w.cancel_button.isEnabled()
    qtbot.mouseClick(w.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not w.busy, timeout=120_000)
    assert [layer.name for layer in viewer.layers] == ["stack"]
    assert w.progress.value() < w.progress.maximum() and not w.export_button.isEnabled()
    assert w.status.text() == "cancelled"

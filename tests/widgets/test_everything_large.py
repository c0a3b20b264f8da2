"""Segment everything on microscopy-scale data from the widget: a stack backed by dask read one slice at a time
(results to a zarr array when large), a 2-channel image with the object in one channel only, and a mosaic
larger than the model tiled at its own pixel scale."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

sys.path.insert(0, str(Path(__file__).parent))  # person_path.py: the helpers shared by these tests
from person_path import OneSliceAtATime, best_iou, open_widget

pytestmark = pytest.mark.gui

NAME = "Segment everything (UnSAMv2)"


def _run(qtbot, w, **controls):
    for name, value in controls.items():
        control = getattr(w, name)
        if hasattr(control, "setText"):
            control.setText(value)
        elif hasattr(control, "setCurrentText"):
            control.setCurrentText(value)
        else:
            control.setValue(value)
    qtbot.mouseClick(w.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not w.busy, timeout=300_000)


def test_a_dask_stack_is_read_one_slice_at_a_time_and_large_results_go_to_zarr(
        make_napari_viewer, qtbot, no_cached_models, monkeypatch):
    import zarr

    from napari_granseg.synthetic import nested_cells_scene
    from napari_granseg.widgets import _layer_pixels
    from napari_granseg.widgets.everything import EverythingWidget

    scenes = [nested_cells_scene(size=128, n_cells=2, seed=s) for s in range(3)]
    stack = OneSliceAtATime(np.stack([s.image for s in scenes]))
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="stack", contrast_limits=(0, 50000))
    w = open_widget(viewer, NAME, "dock", EverythingWidget)
    monkeypatch.setattr(_layer_pixels, "LARGE_LABELS_BYTES", 1000)  # this small stack counts as large
    _run(qtbot, w, granularity="1.0", points=8)
    assert w.last_error == "", w.last_error
    layer = viewer.layers["everything g=1"]
    assert isinstance(layer.data, zarr.Array) and layer.data.shape == (3, 128, 128)
    store = Path(layer.metadata["store"])
    assert store.is_dir() and str(store) in w.status.text()
    labels = np.asarray(layer.data[:])
    for z, scene in enumerate(scenes):  # every slice's cells, ids unique across the stack
        assert min(best_iou(labels[z], cell) for cell in scene.masks[2]) > 0.5
    ids = [set(np.unique(labels[z])) - {0} for z in range(3)]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2])
    assert not w.export_button.isEnabled()  # a zarr result is not read back whole for a hierarchy


def test_two_channel_image_segments_the_chosen_channel(make_napari_viewer, qtbot, no_cached_models):
    from napari_granseg.synthetic import nested_cells_scene
    from napari_granseg.widgets.everything import EverythingWidget

    scene = nested_cells_scene(size=128, n_cells=2, seed=1)
    noise = np.random.default_rng(0).normal(1000, 30, scene.image.shape).clip(0).astype(np.uint16)
    two = np.stack([noise, scene.image])  # (C, H, W): the cells are visible in channel 1 only
    viewer = make_napari_viewer()
    viewer.add_image(two, name="two channels")
    w = open_widget(viewer, NAME, "dock", EverythingWidget)
    _run(qtbot, w, granularity="1.0", points=8, channels="1")
    assert w.last_error == "", w.last_error
    labels = viewer.layers["everything g=1"].data
    assert labels.shape == (128, 128)
    assert min(best_iou(labels, cell) for cell in scene.masks[2]) > 0.5
    # (H, W, C) without a channel choice: the message says what to type
    viewer.add_image(np.moveaxis(two, 0, -1), name="hwc")
    w.image_combo.setCurrentText("hwc")
    w.channels.setText("")
    qtbot.mouseClick(w.run_button, Qt.LeftButton)
    assert "2-channel" in w.last_error and "channels" in w.last_error


def test_a_large_mosaic_is_tiled_and_every_cell_found(make_napari_viewer, qtbot, no_cached_models):
    from napari_granseg.widgets.everything import EverythingWidget

    spec = importlib.util.spec_from_file_location(
        "tiling_cases", Path(__file__).parents[1] / "large_images" / "test_tiling.py")
    cases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cases)
    image, cells = cases.mosaic(2, 2)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="mosaic")
    w = open_widget(viewer, NAME, "dock", EverythingWidget)
    _run(qtbot, w, granularity="1.0", points=12, scale="tile")
    assert w.last_error == "", w.last_error
    labels = viewer.layers["everything g=1"].data
    ious = [best_iou(labels, mask) for mask, _ in cells]
    assert min(ious) > 0.5, ious

"""The interactive widget on microscopy-scale data, through the person's path (plugin dock, real clicks):
a mosaic larger than the model's input previewed through tiles, a 2-channel image where only the chosen
channel shows the clicked cell, and a dask stack that must never be read whole (preview and propagation)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
da = pytest.importorskip("dask.array")

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "large_images"))
from test_person_paths import TIMEOUT_MS, _iou, click, key, open_widget, show, wait_preview, wait_ready  # noqa: E402
from test_tiling import mosaic  # noqa: E402
from test_channels import two_channel_scene  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402


@pytest.fixture
def viewer(make_napari_viewer):
    v = make_napari_viewer(show=True)
    v.window._qt_window.resize(900, 700)
    return v


def test_a_click_on_a_large_mosaic_previews_the_cell_through_tiles(viewer, qtbot, demo_unsamv2):
    image, cells = mosaic(3, 3)                       # 842 x 874 px; the demo model sees 256 px
    viewer.add_image(image, name="mosaic")
    w = open_widget(viewer, demo_unsamv2)
    show(viewer)
    wait_ready(w, qtbot)
    assert w.scale_combo.currentText() == "auto" and w.tile_for(image.shape) == 256
    w.granularity = 1.0
    cell, (row, col) = cells[4]                        # a cell of the middle scene
    click(viewer, (row, col))
    mask = wait_preview(w, qtbot)
    assert mask.shape == image.shape
    assert _iou(mask, cell) > 0.75, _iou(mask, cell)
    window = w.tiled_predictor(256).last_window
    assert window is not None and window.contains(row, col, row, col)

    with qtbot.waitSignal(w.embedded, timeout=TIMEOUT_MS) as sig:   # Embed all: every tile, in a worker
        w.embed_all_button.click()
    tiled = w.tiled_predictor(256)
    assert sig.args == [len(tiled.windows)] and len(tiled.windows) > 4


def test_channels_choose_what_the_model_sees(viewer, qtbot, demo_unsamv2):
    hwc, scene = two_channel_scene()                  # channel 0 shows cell A only, channel 1 cell B only
    b = scene.masks[2][1]
    viewer.add_image(np.moveaxis(hwc, -1, 0), name="two channels")   # (C, H, W): napari shows 2 slices
    w = open_widget(viewer, demo_unsamv2)
    show(viewer)
    wait_ready(w, qtbot)
    texts = [w.channels_combo.itemText(i) for i in range(w.channels_combo.count())]
    assert "channel 0" in texts and "channel 1" in texts and "composite 0 + 1" in texts
    w.set_channels("channel 1")
    w.granularity = 1.0
    click(viewer, scene.centers[1])                   # cell B, on the slice shown (channel 0: B is erased)
    mask = wait_preview(w, qtbot)
    assert mask.shape == b.shape and _iou(mask, b) > 0.8, _iou(mask, b)
    key(viewer, Qt.Key.Key_C)                         # committed into a 2D labels layer
    qtbot.waitUntil(lambda: w.last_commit is not None or bool(w.last_message), timeout=TIMEOUT_MS)
    assert w.last_commit is not None, repr(w.last_message)
    assert w.labels_layer.data.shape == b.shape and _iou(w.labels_layer.data == w.last_commit.label_id, b) > 0.8

    # napari's channel-split layers: a composite of same-shape layers is offered
    viewer.add_image(hwc, channel_axis=-1, name=["c0", "c1"])
    wait_ready(w, qtbot)
    texts = [w.channels_combo.itemText(i) for i in range(w.channels_combo.count())]
    assert any(t.startswith("composite: c1 + c0") for t in texts), texts


class WholeReadForbidden(da.Array):
    """A dask stack that raises when someone materialises all of it (slices stay ordinary dask arrays)."""

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole stack was materialised")

    def compute(self, **kwargs):
        raise AssertionError("the whole stack was computed")


def test_a_dask_stack_is_read_per_slice_for_preview_and_propagation(viewer, qtbot, demo_unsamv2):
    from napari_granseg.synthetic import nested_cells_stack

    stack, scenes = nested_cells_stack(n_slices=6, size=128, seed=4, drift=1.0)
    lazy = da.from_array(stack, chunks=(1, 128, 128))
    guarded = WholeReadForbidden(lazy.dask, lazy.name, lazy.chunks, meta=lazy._meta)
    with pytest.raises(AssertionError):
        np.asarray(guarded)
    viewer.add_image(guarded, name="stack", contrast_limits=(0, int(stack.max())))
    w = open_widget(viewer, demo_unsamv2)
    show(viewer)
    wait_ready(w, qtbot)
    viewer.dims.set_current_step(0, 2)
    w.granularity = 1.0
    click(viewer, scenes[2].centers[0])
    mask = wait_preview(w, qtbot)
    assert _iou(mask, scenes[2].masks[2][0]) > 0.5
    key(viewer, Qt.Key.Key_C)
    qtbot.waitUntil(lambda: w.last_commit is not None, timeout=TIMEOUT_MS)
    with qtbot.waitSignal(w.propagated, timeout=TIMEOUT_MS) as sig:
        w.propagate_button.click()
    assert sig.args[0] >= 3, w.last_message
    labels = np.asarray(w.labels_layer.data)
    for z in (0, 5):
        assert _iou(labels[z] == w.last_commit.label_id, scenes[z].masks[2][0]) > 0.5

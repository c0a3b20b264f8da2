"""The interactive widget on the paths a person takes: opened through napari's plugin API (which hands the
widget a proxy of the viewer), in every order, then REAL mouse clicks and drags on the vispy canvas.

A click goes to napari's active layer only; these tests fail when the prompts layer is missing, not active or
not in add mode (the click then pans and nothing is previewed). Each preview is checked against the true mask
of the clicked cell of a synthetic scene (the bundled demo UnSAMv2, set through ``widget.model``).
Workers are awaited with qtbot; nothing is timed.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from qtpy.QtCore import QEvent, QPoint, QPointF, Qt  # noqa: E402
from qtpy.QtGui import QMouseEvent  # noqa: E402
from qtpy.QtTest import QTest  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

WIDGET = "Interactive (UnSAMv2)"   # the display name in napari.yaml
TIMEOUT_MS = 60_000


def _iou(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _canvas(viewer):
    return viewer.window._qt_viewer.canvas.native


def _to_canvas(viewer, rc) -> QPoint:
    """Data (row, col) of a 2D view -> canvas pixel (camera centre at the canvas centre)."""
    cam, native = viewer.camera, _canvas(viewer)
    x = (rc[1] - cam.center[-1]) * cam.zoom + native.width() / 2
    y = (rc[0] - cam.center[-2]) * cam.zoom + native.height() / 2
    return QPoint(int(round(x)), int(round(y)))


def click(viewer, rc, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    QTest.mouseClick(_canvas(viewer), Qt.MouseButton.LeftButton, modifier, _to_canvas(viewer, rc))


def drag(viewer, path_rc) -> None:
    """Press at the first point, move through the others with the button held, release at the last."""
    native = _canvas(viewer)
    pts = [QPointF(_to_canvas(viewer, rc)) for rc in path_rc]
    left, none = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier

    def send(kind, p, button, buttons):
        QApplication.sendEvent(native, QMouseEvent(kind, p, QPointF(native.mapToGlobal(p.toPoint())), button, buttons, none))
        QApplication.processEvents()

    send(QEvent.Type.MouseButtonPress, pts[0], left, left)
    for p in pts[1:]:
        send(QEvent.Type.MouseMove, p, Qt.MouseButton.NoButton, left)
    send(QEvent.Type.MouseButtonRelease, pts[-1], left, Qt.MouseButton.NoButton)


def key(viewer, k) -> None:
    QTest.keyClick(_canvas(viewer), k)


def open_widget(viewer, model):
    """As docs/scripting.md shows (the Plugins menu calls the same napari function)."""
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-granseg", WIDGET)
    widget.model = model
    return widget


def wait_ready(widget, qtbot) -> None:
    """Until the widget has its image, its prompts layer is active in add mode and nothing runs; then the whole
    image is in view (the widget adds its layers after the dock opens, and their controls can narrow the
    canvas: a person looks at the image before clicking, the test resets the view as they would zoom out)."""
    qtbot.waitUntil(lambda: widget.prompts.is_active() and not widget.busy, timeout=TIMEOUT_MS)
    widget.viewer.reset_view()
    QApplication.processEvents()


def wait_preview(widget, qtbot) -> np.ndarray:
    qtbot.waitUntil(lambda: widget.preview_mask is not None and not widget.busy, timeout=TIMEOUT_MS)
    return widget.preview_mask.copy()


def show(viewer) -> None:
    viewer.reset_view()
    QApplication.processEvents()


@pytest.fixture
def viewer(make_napari_viewer):
    v = make_napari_viewer(show=True)
    v.window._qt_window.resize(900, 700)
    return v


def _cell_click_checks(widget, viewer, qtbot, scene, i=0):
    """One click on cell ``i``'s nucleolus at g=1: the preview is that cell (not the other)."""
    widget.granularity = 1.0
    click(viewer, scene.centers[i])
    mask = wait_preview(widget, qtbot)
    cell, other = scene.masks[2][i], scene.masks[2][1 - i]
    assert _iou(mask, cell) > 0.5, _iou(mask, cell)
    assert _iou(mask, other) < 0.1
    assert len(widget.prompts_layer.data) == 1
    return mask


def test_image_first_then_widget_one_click_previews_the_cell(viewer, qtbot, demo_unsamv2, nested_scenes):
    scene = nested_scenes[0]
    viewer.add_image(scene.image, name="cells")
    w = open_widget(viewer, demo_unsamv2)
    show(viewer)
    wait_ready(w, qtbot)
    assert w.image_layer.name == "cells" and w.prompts_layer is not None
    assert viewer.layers.selection.active.name == "granseg prompts" and w.prompts_layer.mode == "add"
    assert "click an object" in w.status.text()
    _cell_click_checks(w, viewer, qtbot, scene)
    assert "C commits" in w.status.text() and "Ctrl+Z" not in w.status.text()


def test_widget_first_then_image(viewer, qtbot, demo_unsamv2, nested_scenes):
    scene = nested_scenes[1]
    w = open_widget(viewer, demo_unsamv2)
    assert w.prompts_layer is None and "open an image" in w.status.text()
    viewer.add_image(scene.image, name="cells")
    show(viewer)
    wait_ready(w, qtbot)   # the new image is the widget's, and the click goes to the prompts, not a pan
    _cell_click_checks(w, viewer, qtbot, scene, i=1)


def test_several_images_and_switching_moves_the_prompts(viewer, qtbot, demo_unsamv2, nested_scenes):
    a, b = nested_scenes[2], nested_scenes[3]
    viewer.add_image(a.image, name="a")
    viewer.add_image(b.image, name="b")
    w = open_widget(viewer, demo_unsamv2)
    show(viewer)
    wait_ready(w, qtbot)
    assert w.image_layer.name == "b"          # the newest image
    _cell_click_checks(w, viewer, qtbot, b)

    viewer.layers.selection.active = viewer.layers["a"]   # the user selects the image: clicks would pan now
    assert "press Click" in w.status.text()
    w.image_combo.setCurrentText("a")         # ... and picks it in the widget
    wait_ready(w, qtbot)
    assert w.prompts.image_name == "a" and len(w.prompts_layer.data) == 0 and w.preview_mask is None
    _cell_click_checks(w, viewer, qtbot, a)

    viewer.layers.selection.active = viewer.layers["a"]
    w.image_combo.activated.emit(w.image_combo.currentIndex())   # re-picking the same (only) choice
    wait_ready(w, qtbot)
    assert len(w.prompts_layer.data) == 1     # same image: its prompts stay


def test_sample_and_widget_as_the_readme_opens_them(viewer, qtbot, demo_unsamv2):
    """``python -m napari_granseg`` = open the sample, then the widget; one click on a nucleolus."""
    from napari_granseg.sample_data import nested_cells_sample_scene

    viewer.open_sample("napari-granseg", "nested_cells")
    w = open_widget(viewer, demo_unsamv2)
    show(viewer)
    wait_ready(w, qtbot)
    scene = nested_cells_sample_scene()
    w.granularity = 0.5
    click(viewer, scene.centers[0])
    mask = wait_preview(w, qtbot)
    r, c = np.round(scene.centers[0]).astype(int)
    assert mask[r, c] and mask.sum() < 0.5 * mask.size


def _plugins_menu_action(viewer, text: str):
    """The QAction a person clicks in napari's Plugins menu (searched through its submenus)."""
    from qtpy.QtWidgets import QMenu

    menus = [viewer.window.plugins_menu]
    while menus:
        menu = menus.pop()
        for action in menu.actions():
            if action.menu() is not None:
                menus.append(action.menu())
            elif text in action.text().replace("&", ""):
                return action
        menus += [m for m in menu.findChildren(QMenu) if m not in menus and m is not menu]
    raise AssertionError(f"no Plugins menu entry containing {text!r}")


def test_image_then_plugins_menu(viewer, qtbot, demo_unsamv2, nested_scenes):
    from napari_granseg.widgets.interactive import InteractiveWidget

    scene = nested_scenes[3]
    viewer.add_image(scene.image, name="cells")
    _plugins_menu_action(viewer, WIDGET).trigger()
    qtbot.waitUntil(lambda: bool(viewer.window._qt_window.findChildren(InteractiveWidget)), timeout=TIMEOUT_MS)
    (w,) = viewer.window._qt_window.findChildren(InteractiveWidget)
    w.model = demo_unsamv2
    show(viewer)
    wait_ready(w, qtbot)
    _cell_click_checks(w, viewer, qtbot, scene)


def test_box_and_scribble_prompts_from_the_canvas(viewer, qtbot, demo_unsamv2, nested_scenes):
    scene = nested_scenes[0]
    viewer.add_image(scene.image, name="cells")
    w = open_widget(viewer, demo_unsamv2)
    show(viewer)
    wait_ready(w, qtbot)
    cell = scene.masks[2][0]
    rr, cc = np.nonzero(cell)

    w.mode_buttons["box"].click()
    assert viewer.layers.selection.active.name == w.shapes_layer.name and w.shapes_layer.mode == "add_rectangle"
    w.granularity = 1.0
    drag(viewer, [(rr.min() - 1, cc.min() - 1), (rr.mean(), cc.mean()), (rr.max() + 1, cc.max() + 1)])
    mask = wait_preview(w, qtbot)
    req = w.preview_request
    assert req.box is not None and len(req.points_xy) == 0
    np.testing.assert_allclose(req.box, [cc.min() - 1, rr.min() - 1, cc.max() + 1, rr.max() + 1], atol=1.5)
    in_box = np.zeros_like(cell)
    in_box[rr.min() - 2:rr.max() + 3, cc.min() - 2:cc.max() + 3] = True
    # the model was trained on clicks, not boxes: the box must bound the answer and pick this cell
    assert mask[in_box].sum() >= 0.9 * mask.sum() > 0
    assert _iou(mask, cell) > 0.3 and _iou(mask, scene.masks[2][1]) < 0.05, _iou(mask, cell)

    key(viewer, Qt.Key.Key_N)                 # next object: box and preview gone
    qtbot.waitUntil(lambda: w.preview_mask is None and len(w.shapes_layer.data) == 0, timeout=TIMEOUT_MS)

    w.mode_buttons["scribble"].click()
    assert w.shapes_layer.mode == "add_path"
    nucleus = scene.masks[1][0]
    nr, nc = np.nonzero(nucleus)
    row = np.median(nr)                       # a stroke across the nucleus, drawn with the button held
    cols = nc[nr == int(row)]
    drag(viewer, [(row, c) for c in np.linspace(cols.min() + 1, cols.max() - 1, 12)])
    mask = wait_preview(w, qtbot)
    req = w.preview_request
    assert len(req.points_xy) >= 3 and (req.point_labels == 1).all()
    assert np.all(nucleus[np.round(req.points_xy[:, 1]).astype(int), np.round(req.points_xy[:, 0]).astype(int)])
    assert _iou(mask, cell) > 0.5, _iou(mask, cell)


def test_commit_right_after_a_change_commits_the_new_preview_and_undo_status(viewer, qtbot, demo_unsamv2,
                                                                             nested_scenes):
    scene = nested_scenes[1]
    viewer.add_image(scene.image, name="cells")
    w = open_widget(viewer, demo_unsamv2)
    show(viewer)
    wait_ready(w, qtbot)
    nucleolus, cell = scene.masks[0][0], scene.masks[2][0]
    w.granularity = 0.1
    click(viewer, scene.centers[0])
    small = wait_preview(w, qtbot)
    assert _iou(small, nucleolus) > _iou(small, cell)

    w.granularity = 1.0                        # slider moved, C at once: the g=1 mask is committed, not g=0.1
    with qtbot.waitSignal(w.committed, timeout=TIMEOUT_MS):
        key(viewer, Qt.Key.Key_C)
    labels = w.labels_layer.data
    assert _iou(labels == 1, cell) > 0.5 and (labels == 1).sum() > 3 * small.sum()
    assert "Ctrl+Z undoes it" in w.status.text()

    click(viewer, scene.centers[1])            # a click and C right away: the new object, not a stale one
    key(viewer, Qt.Key.Key_C)
    qtbot.waitUntil(lambda: (w.labels_layer.data == 2).any() and not w.busy, timeout=TIMEOUT_MS)
    assert _iou(w.labels_layer.data == 2, scene.masks[2][1]) > 0.5
    assert (w.labels_layer.data == 1).sum() == (labels == 1).sum()

    w.undo_button.click()
    w.undo_button.click()
    assert not w.labels_layer.data.any()
    assert "Ctrl+Z" not in w.status.text() and not w.undo_button.isEnabled()


def test_cancel_stops_embedding_at_the_next_slice(viewer, qtbot, demo_unsamv2):
    import threading

    from napari_granseg.synthetic import nested_cells_stack

    stack, _ = nested_cells_stack(n_slices=12, size=96, seed=3, drift=1.0)
    viewer.add_image(stack, name="stack")
    w = open_widget(viewer, demo_unsamv2)
    wait_ready(w, qtbot)
    original, gate, calls = w.predictor.set_image, threading.Event(), []

    def held_set_image(image, *args, **kwargs):
        """The second slice's embedding is still running when Cancel is pressed (no race with the clock)."""
        original(image, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            gate.wait(TIMEOUT_MS / 1000)

    w.predictor.set_image = held_set_image
    w.embed_all_button.click()
    qtbot.waitUntil(lambda: len(calls) == 2, timeout=TIMEOUT_MS)
    w.cancel_button.click()
    gate.set()
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT_MS)
    assert len(calls) == 2 and w.predictor.cache.misses == 2   # the slice under way finished, no further one
    assert "cancelled" in w.status.text() and w.embed_all_button.isEnabled()


def test_refine_an_existing_label_from_a_click(viewer, qtbot, demo_unsamv2, nested_scenes):
    scene = nested_scenes[2]
    viewer.add_image(scene.image, name="cells")
    rough = np.zeros(scene.image.shape, np.int32)
    rough[scene.masks[1][0]] = 4                  # label 4 = only the nucleus of a cell
    labels = viewer.add_labels(rough.copy(), name="my labels")
    w = open_widget(viewer, demo_unsamv2)
    show(viewer)
    wait_ready(w, qtbot)
    assert w.image_layer.name == "cells"
    w.labels_combo.setCurrentText("my labels")
    w.refine_check.setChecked(True)
    w.granularity = 1.0
    click(viewer, scene.centers[0])
    mask = wait_preview(w, qtbot)
    req = w.preview_request
    assert req.refine_label == 4 and req.mask_input.shape[0] == 1
    assert "C replaces label 4" in w.status.text()
    with qtbot.waitSignal(w.committed, timeout=TIMEOUT_MS) as sig:
        key(viewer, Qt.Key.Key_C)
    assert sig.args == [4] and set(np.unique(labels.data)) == {0, 4}   # refined in place, no new id
    np.testing.assert_array_equal(labels.data == 4, mask)
    assert _iou(labels.data == 4, scene.masks[2][0]) > _iou(rough == 4, scene.masks[2][0])
    labels.undo()                                 # one step back to the rough label
    np.testing.assert_array_equal(labels.data, rough)

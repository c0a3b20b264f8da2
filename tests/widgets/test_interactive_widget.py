"""The interactive widget (click, granularity slider, commit/undo, stacks), in a real napari viewer.

The model is the session's tiny UnSAMv2 trained on synthetic nested cells (tests/conftest.py); scenes are
unseen. A click on a nucleolus centre at g=0.1 must preview the nucleolus, at g=1.0 the whole cell.
Workers are awaited with qtbot signals; nothing is timed.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_granseg.synthetic import nested_cells_stack  # noqa: E402
from napari_granseg.widgets.interactive import InteractiveWidget  # noqa: E402

TIMEOUT_MS = 60_000


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _idle(widget, qtbot):
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)


@pytest.fixture
def widget_with(make_napari_viewer, qtbot, trained_unsamv2):
    """(viewer, widget) factory: a viewer holding ``image`` and the widget with the trained model injected."""
    made = []

    def make(image, name="cells"):
        viewer = make_napari_viewer()
        viewer.add_image(image, name=name)
        widget = InteractiveWidget(viewer, model=trained_unsamv2)
        viewer.window.add_dock_widget(widget, name="Interactive (UnSAMv2)")
        made.append(widget)
        return viewer, widget

    yield make
    for w in made:
        _idle(w, qtbot)


def _click(widget, qtbot, rc, positive=True):
    with qtbot.waitSignal(widget.preview_updated, timeout=TIMEOUT_MS):
        widget.add_prompt(rc, positive=positive)
    _idle(widget, qtbot)


def _set_g(widget, qtbot, g):
    with qtbot.waitSignal(widget.preview_updated, timeout=TIMEOUT_MS):
        widget.granularity_slider.setValue(g)
    _idle(widget, qtbot)


def test_click_previews_the_clicked_object_and_slider_changes_it(widget_with, qtbot, nested_scenes):
    scene = nested_scenes[0]
    viewer, w = widget_with(scene.image)
    row, col = scene.centers[0]
    nucleolus, cell = scene.masks[0][0], scene.masks[2][0]

    w.granularity = 0.1
    _click(w, qtbot, (row, col))
    small = w.preview_mask.copy()
    assert w.preview_layer.data.sum() == small.sum() > 0
    assert _iou(small, nucleolus) > 0.5, _iou(small, nucleolus)
    assert _iou(small, nucleolus) > _iou(small, cell)
    assert w.predictor.cache.misses == 1  # one embedding for the image

    _set_g(w, qtbot, 1.0)
    big = w.preview_mask.copy()
    assert _iou(big, cell) > 0.5, _iou(big, cell)
    assert _iou(big, cell) > _iou(big, nucleolus)
    assert big.sum() > 3 * small.sum()
    assert w.predictor.cache.misses == 1  # the slider only ran the decoder

    # the clicks are in an editable Points layer with their sign
    pts = w.prompts_layer
    assert pts.name == "granseg prompts" and len(pts.data) == 1
    assert pts.features["positive"].tolist() == [True]


def test_negative_click_is_recorded_and_sent_to_the_model(widget_with, qtbot, nested_scenes):
    scene = nested_scenes[1]
    viewer, w = widget_with(scene.image)
    row, col = scene.centers[0]
    w.granularity = 1.0
    _click(w, qtbot, (row, col))
    cell = scene.masks[2][0]
    nucleus = scene.masks[1][0]
    # a negative click inside the cell but outside the nucleus
    rr, cc = np.nonzero(cell & ~nucleus)
    far = np.argmax((rr - row) ** 2 + (cc - col) ** 2)
    _click(w, qtbot, (rr[far], cc[far]), positive=False)
    assert w.prompts_layer.features["positive"].tolist() == [True, False]
    request, mask = w.preview_request, w.preview_mask
    assert request.point_labels.tolist() == [1, 0]     # the sign reaches the model ...
    np.testing.assert_allclose(request.points_xy[1], [cc[far], rr[far]])   # ... as (x, y)
    assert mask.sum() > 0 and w.predictor.cache.misses == 1


def test_commit_adds_a_new_label_without_touching_others_and_undo_restores(widget_with, qtbot, nested_scenes):
    scene = nested_scenes[2]
    viewer, w = widget_with(scene.image)
    row, col = scene.centers[0]
    existing = np.zeros(scene.image.shape, np.int32)
    rr, cc = np.nonzero(scene.masks[1][0])           # an existing label 7 on the nucleus' left half
    left = cc < np.median(cc)
    existing[rr[left], cc[left]] = 7
    labels = viewer.add_labels(existing.copy(), name="my labels")
    w.labels_combo.setCurrentText("my labels")
    w.granularity = 1.0
    _click(w, qtbot, (row, col))
    mask = w.preview_mask.copy()
    assert (mask & (existing == 7)).any()            # the preview overlaps the existing label

    with qtbot.waitSignal(w.committed, timeout=TIMEOUT_MS) as sig:
        w.commit_button.click()
    assert sig.args == [8]                            # max + 1
    data = labels.data
    assert (data[existing == 7] == 7).all()          # other labels untouched
    np.testing.assert_array_equal(data == 8, mask & (existing == 0))
    assert w.preview_mask is None and len(w.prompts_layer.data) == 0   # ready for the next object

    labels.undo()
    np.testing.assert_array_equal(labels.data, existing)
    labels.redo()
    assert (labels.data == 8).sum() == (mask & (existing == 0)).sum()


def test_user_mistakes_become_notifications(make_napari_viewer, qtbot, trained_unsamv2):
    viewer = make_napari_viewer()
    w = InteractiveWidget(viewer, model=trained_unsamv2)
    assert not w.commit_button.isEnabled()       # nothing to commit: the button cannot act ...
    w._guard(w.commit)                           # ... and the C key says why
    assert w.last_message[0] == "error" and "click on an object first" in w.last_message[1]
    w.propagate_button.setEnabled(True)
    w.propagate_button.click()                   # nothing committed
    assert "commit" in w.last_message[1]
    w._guard(lambda: w.segment_points([(5, 5)]))  # no image layer
    assert "no image layer" in w.last_message[1]

    viewer.add_image(np.zeros((2, 3, 40, 40, 3), np.uint8), name="rgb 4d", rgb=True)
    w.image_combo.setCurrentText("rgb 4d")
    w._guard(w.embed_all_slices)
    assert "propagation runs along one axis" in w.last_message[1]

    viewer.add_image(np.random.default_rng(0).integers(0, 255, (40, 40), np.uint8), name="small")
    w.image_combo.setCurrentText("small")
    with qtbot.waitSignal(w.preview_updated, timeout=TIMEOUT_MS):
        w.add_prompt((20, 20))
    w.add_prompt((20, 90))                       # outside the image
    qtbot.waitUntil(lambda: w.last_message[0] == "warning", timeout=TIMEOUT_MS)
    assert "outside the image" in w.last_message[1]
    _idle(w, qtbot)


def test_stack_segments_the_current_slice_and_propagates(make_napari_viewer, qtbot, trained_unsamv2, monkeypatch):
    stack, scenes = nested_cells_stack(n_slices=5, size=128, seed=4, drift=1.0)
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="stack")
    w = InteractiveWidget(viewer, model=trained_unsamv2)
    viewer.dims.set_current_step(0, 2)
    assert w.current_index() == (2,)

    with qtbot.waitSignal(w.embedded, timeout=TIMEOUT_MS) as sig:
        w.embed_all_button.click()
    assert sig.args == [5]
    from napari_granseg.engine.normalize import stack_intensity_range

    rng = stack_intensity_range(stack)  # every slice embedded with the stack's one range
    assert all(w.predictor.is_cached(s, intensity=rng) for s in stack)

    row, col = scenes[2].centers[0]
    w.granularity = 0.5
    _click(w, qtbot, (row, col))
    assert w.prompts_layer.data[0, 0] == 2           # the click is on the current slice
    preview = w.preview_mask.copy()
    assert preview[int(round(row)), int(round(col))]  # the preview covers the clicked object
    level = int(np.argmax([_iou(preview, scenes[2].masks[lvl][0]) for lvl in range(3)]))
    assert _iou(preview, scenes[2].masks[level][0]) > 0.3
    with qtbot.waitSignal(w.committed, timeout=TIMEOUT_MS):
        w.commit()
    labels = w.labels_layer
    assert labels.data.shape == stack.shape
    np.testing.assert_array_equal(labels.data[2] == 1, preview)
    assert not labels.data[[0, 1, 3, 4]].any()

    # Propagation itself is SAM 2's video path (engine.propagate; tested against sam2 in tests/engine). Its
    # quality needs trained memory modules, which this session's test model does not have (it trains on single
    # images only, to keep CI short; the bundled demo has a memory stage and propagates for real in the next
    # test). So the engine is replaced by a recording stand-in that "tracks" the true drifting cell, and the test
    # checks the widget's side: what it sends, where it writes, that the committed slice stays as committed,
    # and one undo step.
    import napari_granseg.engine.propagate as engine_propagate

    calls = []

    def fake_propagate(model, stack_arg, prompt, progress=None, cancel=None, **kw):
        calls.append((model, np.asarray(stack_arg).shape, prompt))
        out = np.zeros(stack_arg.shape, np.int32)
        for z in range(len(stack_arg)):
            out[z][scenes[z].masks[level][0]] = prompt.obj_id
            if progress is not None:
                progress(z + 1, len(stack_arg))
        return out

    monkeypatch.setattr(engine_propagate, "propagate", fake_propagate)
    with qtbot.waitSignal(w.propagated, timeout=TIMEOUT_MS) as sig:
        w.propagate_button.click()
    (model_arg, shape_arg, prompt), = calls
    assert model_arg is trained_unsamv2 and shape_arg == stack.shape
    assert prompt.frame == 2 and prompt.granularity == 0.5
    np.testing.assert_allclose(np.asarray(prompt.points)[0], [col, row], atol=0.5)  # (x, y) of the click
    assert sig.args[0] == 4                          # every other slice got the object
    np.testing.assert_array_equal(labels.data[2] == 1, preview)   # the committed slice is kept as committed
    for z in (0, 1, 3, 4):
        np.testing.assert_array_equal(labels.data[z] == 1, scenes[z].masks[level][0])
    labels.undo()                                    # one undo removes the whole propagation
    assert not labels.data[[0, 1, 3, 4]].any() and (labels.data[2] == 1).any()
    _idle(w, qtbot)


def test_demo_propagation_follows_the_clicked_cell_and_leaves_the_other(make_napari_viewer, qtbot, tmp_path,
                                                                          monkeypatch):
    """The real engine end to end: the bundled demo (trained with memory episodes) propagates one click through
    a two-cell stack in the widget's worker; every slice gets the clicked cell and not its neighbour."""
    from napari_granseg import zoo

    monkeypatch.setenv("GRANSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GRANSEG_OFFLINE", "1")
    stack, scenes = nested_cells_stack(n_slices=6, size=128, seed=20_010, drift=2.0, n_cells=2)
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="stack")
    w = InteractiveWidget(viewer, model=zoo.load_model("unsamv2-demo", device="cpu"))
    viewer.dims.set_current_step(0, 3)
    row, col = scenes[3].centers[0]
    w.granularity = 1.0
    _click(w, qtbot, (row, col))
    with qtbot.waitSignal(w.committed, timeout=TIMEOUT_MS):
        w.commit()
    with qtbot.waitSignal(w.propagated, timeout=TIMEOUT_MS):
        w.propagate_button.click()
    labels = w.labels_layer.data
    for z in range(6):
        clicked, other = scenes[z].masks[2]
        assert _iou(labels[z] == 1, clicked) > 0.8, z
        assert (labels[z][other] == 1).mean() < 0.05, z
    _idle(w, qtbot)


def test_model_loads_in_a_worker_and_demo_is_flagged(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    w = InteractiveWidget(viewer, load_default=False)
    with qtbot.waitSignal(w.model_changed, timeout=TIMEOUT_MS):
        w.load_model("unsamv2-demo", device="cpu")
    assert w.model.is_demo and "DEMO" in w.model_label.text()
    assert w.predictor.has_granularity

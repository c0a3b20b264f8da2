"""Every label write of the widgets reaches the recovery store before the widget reports it done, and the
"Restore ..." row brings a gone session's labels back (napari in this process; the crash itself, through a
killed napari, is tests/widgets/test_crash_recovery.py).

What is checked is the pixels: what the store gives back equals what the Labels layer holds.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from qtpy.QtCore import Qt  # noqa: E402

from napari_granseg.widgets.recovery_hooks import RestoreOffer, record_write, store_for  # noqa: E402

pytestmark = pytest.mark.gui
TIMEOUT_MS = 300_000


@pytest.fixture
def store_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRANSEG_RECOVERY_DIR", str(tmp_path / "recovery"))
    return tmp_path / "recovery"


def _stored(image_layer, name: str) -> np.ndarray:
    store = store_for(image_layer)
    [entry] = [e for e in store.entries() if e.name == name]
    return store.restore(entry.id)


def _disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_one_commit_on_a_large_stack_writes_about_the_object_not_the_stack(store_dir):
    """A (64, 2048, 2048) int32 labels stack (1 GiB, a zarr array never filled) and a dask image: a commit of a
    40 px disc writes a few kB to the store; the whole-slice form (refine) writes the changed chunks only."""
    import dask.array as da
    import napari
    import zarr

    shape = (64, 2048, 2048)
    image = napari.layers.Image(da.zeros(shape, np.uint16, chunks=(1, 2048, 2048)), name="big")
    labels_data = zarr.create_array(store=str(store_dir.parent / "labels.zarr"), shape=shape, chunks=(1, 512, 512),
                                    dtype="int32", fill_value=0)
    labels = napari.layers.Labels(labels_data, name="granseg labels")
    rr, cc = np.mgrid[:2048, :2048]
    disc = (rr - 1000) ** 2 + (cc - 700) ** 2 <= 20 ** 2
    labels_data[30] = disc.astype(np.int32)  # what write_object put there
    before = _disk_bytes(store_dir) if store_dir.exists() else 0
    assert record_write(image, labels, (30,), disc, "interactive commit") == ""
    first = _disk_bytes(store_dir) - before
    stack_bytes = int(np.prod(shape)) * 4
    assert first < 16 * 1024, first  # the disc's chunk (compressed) + one small manifest, of a 1 GiB stack
    # a second object on another slice: again about its own size, whatever is stored already
    labels_data[50, 100:140, 1900:1940] = 2
    mid = _disk_bytes(store_dir)
    record_write(image, labels, (50,), None, "interactive refine")  # the whole slice: changed chunks only
    second = _disk_bytes(store_dir) - mid
    assert second < 16 * 1024, second
    out = store_for(image).restore(store_for(image).entries()[0].id, out=zarr.create_array(
        store=str(store_dir.parent / "restored.zarr"), shape=shape, chunks=(1, 2048, 2048), dtype="int32",
        fill_value=0))
    np.testing.assert_array_equal(out[30], labels_data[30])
    np.testing.assert_array_equal(out[50], labels_data[50])
    assert not out[29].any()
    print(f"stack {stack_bytes / 2**30:.1f} GiB; bytes on disk after commit 1: {first}, after commit 2: {second}")


def test_commit_and_propagation_are_in_the_store_when_the_widget_reports_them(make_napari_viewer, qtbot,
                                                                             store_dir, demo_unsamv2):
    from napari_granseg.synthetic import nested_cells_stack
    from napari_granseg.widgets.interactive import InteractiveWidget

    stack, scenes = nested_cells_stack(n_slices=4, size=128, seed=20_010, drift=2.0, n_cells=2)
    viewer = make_napari_viewer()
    image = viewer.add_image(stack, name="stack")
    w = InteractiveWidget(viewer, model=demo_unsamv2)
    viewer.dims.set_current_step(0, 2)
    seen = {}
    w.committed.connect(lambda _id: seen.setdefault("commit", _stored(image, "granseg labels")))
    w.propagated.connect(lambda _n: seen.setdefault("propagate", _stored(image, "granseg labels")))
    w.granularity = 1.0
    qtbot.waitUntil(lambda: w.prompts.points is not None and not w.busy, timeout=TIMEOUT_MS)
    w.add_prompt(scenes[2].centers[0])
    qtbot.waitUntil(lambda: w.preview_mask is not None and not w.busy, timeout=TIMEOUT_MS)
    with qtbot.waitSignal(w.committed, timeout=TIMEOUT_MS):
        w.commit()
    np.testing.assert_array_equal(seen["commit"], w.labels_layer.data)  # stored before "committed" was said
    assert seen["commit"][2].any() and not seen["commit"][[0, 1, 3]].any()
    with qtbot.waitSignal(w.propagated, timeout=TIMEOUT_MS):
        w.propagate_button.click()
    assert w.labels_layer.data[[0, 1, 3]].any()
    np.testing.assert_array_equal(seen["propagate"], w.labels_layer.data)
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT_MS)
    qtbot.mouseClick(w.undo_button, Qt.LeftButton)  # the propagation goes, in the layer and in the store
    assert not w.labels_layer.data[[0, 1, 3]].any()
    np.testing.assert_array_equal(_stored(image, "granseg labels"), w.labels_layer.data)
    w.session.redo()  # what Ctrl+Shift+Z calls: the propagation is back, in the layer and in the store
    assert w.labels_layer.data[[0, 1, 3]].any()
    np.testing.assert_array_equal(_stored(image, "granseg labels"), w.labels_layer.data)
    # refining label 1 (a click inside it with Refine on) replaces its pixels: stored before "committed" too
    w.refine_check.setChecked(True)
    w.granularity = 0.1
    w.add_prompt(scenes[2].centers[0])
    qtbot.waitUntil(lambda: w.preview_mask is not None and not w.busy, timeout=TIMEOUT_MS)
    assert w.preview_request.refine_label == 1
    before = w.labels_layer.data.copy()
    seen.pop("commit")
    with qtbot.waitSignal(w.committed, timeout=TIMEOUT_MS):
        w.commit()
    assert not np.array_equal(before[2], w.labels_layer.data[2])
    np.testing.assert_array_equal(seen["commit"], w.labels_layer.data)
    assert store_for(image).entries()[0].writer == "interactive refine"


def test_segment_everything_layers_are_stored(make_napari_viewer, qtbot, store_dir, no_cached_models):
    from napari_granseg.widgets.everything import EverythingWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-granseg", "nested_cells")
    w = EverythingWidget(viewer)
    w.granularity.setText("0.5, 1.0")
    w.points.setValue(4)
    qtbot.mouseClick(w.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT_MS)
    assert w.last_error == ""
    image = viewer.layers["nested cells"]
    for name in ("everything g=0.5", "everything g=1"):
        assert viewer.layers[name].data.any()
        np.testing.assert_array_equal(_stored(image, name), viewer.layers[name].data)


def test_fewshot_output_is_stored_slice_by_slice(make_napari_viewer, qtbot, store_dir, no_cached_models):
    from napari_granseg.synthetic import shapes_scene
    from napari_granseg.widgets.fewshot import FewShotWidget

    rng = np.random.default_rng(5)
    scenes = [shapes_scene(size=128, n_objects=3, rng=rng) for _ in range(3)]
    images, truth = np.stack([s[0] for s in scenes]), np.stack([s[1] for s in scenes])
    refs = np.zeros_like(truth)
    refs[0] = truth[0] == 1
    viewer = make_napari_viewer()
    image = viewer.add_image(images, name="series")
    viewer.add_labels(refs, name="refs")
    w = FewShotWidget(viewer)
    w.size_combo.setCurrentText("model size")
    qtbot.mouseClick(w.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT_MS)
    assert w.last_error == ""
    out = viewer.layers["refs few-shot"].data
    assert out[1:].any()
    np.testing.assert_array_equal(_stored(image, "refs few-shot"), out)


def test_restore_row_offers_a_gone_session_and_never_replaces_a_layer(make_napari_viewer, qtbot, store_dir,
                                                                       no_cached_models):
    from napari_granseg.recovery import RecoveryStore
    from napari_granseg.recovery.session import current_session
    from napari_granseg.widgets.everything import EverythingWidget

    image = np.random.default_rng(3).integers(0, 60000, (96, 80), dtype=np.uint16)
    crashed = np.zeros((96, 80), np.int32)
    crashed[10:30, 5:25] = 4
    store = RecoveryStore.open_for(image, shape=crashed.shape, dtype=np.int32)
    eid = store.record("granseg labels", (), crashed, "interactive commit")
    entry = store._entry(eid)  # as a napari that was killed leaves it
    entry.update_manifest(session={"id": "gone", "pid": 2**22 + 7, "started": 1.0, "host": current_session()["host"]})
    viewer = make_napari_viewer()
    w = EverythingWidget(viewer)
    [offer] = w.findChildren(RestoreOffer)
    assert offer.restore_button.isHidden()  # no image: nothing offered
    viewer.add_labels(np.ones((96, 80), np.int32), name="granseg labels")  # the person's own layer of that name
    viewer.add_image(image.copy(), name="pasted")  # no file: found by its pixels
    assert not offer.restore_button.isHidden()
    assert offer.restore_button.text().startswith("Restore 'granseg labels' from ")
    qtbot.mouseClick(offer.restore_button, Qt.LeftButton)
    np.testing.assert_array_equal(viewer.layers["granseg labels [2]"].data, crashed)
    np.testing.assert_array_equal(viewer.layers["granseg labels"].data, 1)  # untouched
    assert w.status.text().startswith("restored 'granseg labels [2]' over 'pasted' (last written ")
    assert offer.restore_button.isHidden()
    # the restored layer goes on being recorded in the same entry, hand edits (the brush) included
    layer = viewer.layers["granseg labels [2]"]
    layer.brush_size = 5
    layer.paint((60, 40), 7)  # what a brush stroke calls
    assert (layer.data == 7).sum() > 10
    qtbot.waitUntil(lambda: (_stored(viewer.layers["pasted"], "granseg labels [2]") == 7).any(), timeout=10_000)
    assert [e.id for e in store_for(viewer.layers["pasted"]).entries()] == [eid]
    np.testing.assert_array_equal(_stored(viewer.layers["pasted"], "granseg labels [2]"), layer.data)
    assert store_for(viewer.layers["pasted"]).entries()[0].writer == "hand edit"
    qtbot.waitUntil(lambda: w._default_model is not None, timeout=TIMEOUT_MS)  # the widget's model listing ends


def test_a_normal_end_releases_what_this_session_wrote(store_dir):
    import napari

    from napari_granseg.widgets.recovery_hooks import release_all

    image = napari.layers.Image(np.arange(1024, dtype=np.uint16).reshape(32, 32), name="img")
    labels = napari.layers.Labels(np.zeros((32, 32), np.int32), name="labels")
    labels.data[3:9, 3:9] = 2
    record_write(image, labels, (), labels.data == 2, "interactive commit")
    assert store_for(image).entries()[0].released is None
    assert release_all() >= 1  # what napari's normal quit (aboutToQuit) calls
    assert store_for(image).entries()[0].released is not None
    # a new layer that takes the name of an earlier one gets its own entry: their labels never mix
    again = napari.layers.Labels(np.zeros((32, 32), np.int32), name="labels")
    again.data[20:24, 20:24] = 5
    record_write(image, again, (), again.data == 5, "interactive commit")
    first, second = sorted(store_for(image).entries(), key=lambda e: e.updated)
    assert first.name == second.name == "labels" and first.id != second.id
    np.testing.assert_array_equal(store_for(image).restore(second.id), again.data)
    np.testing.assert_array_equal(store_for(image).restore(first.id), labels.data)


def test_autosave_off_and_an_unwritable_store_never_break_a_write(make_napari_viewer, store_dir, monkeypatch,
                                                                   tmp_path):
    import napari

    image = napari.layers.Image(np.ones((32, 32), np.uint16), name="img")
    labels = napari.layers.Labels(np.ones((32, 32), np.int32), name="labels")
    monkeypatch.setenv("GRANSEG_RECOVERY", "0")
    assert record_write(image, labels) == "" and not store_dir.exists()
    monkeypatch.delenv("GRANSEG_RECOVERY")
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("GRANSEG_RECOVERY_DIR", str(blocker / "store"))
    text = record_write(napari.layers.Image(np.ones((32, 32), np.uint16)), labels)
    assert "GRANSEG_RECOVERY_DIR" in text and os.fspath(blocker) in text

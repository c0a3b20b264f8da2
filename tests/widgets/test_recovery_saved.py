"""A Labels layer the person saved with napari's File > Save Selected Layers lets its recovery entry go: it is
kept GRANSEG_RECOVERY_KEEP_DAYS after the session, not the crash time; a layer not saved, or changed after the
save, is still kept as unsaved. The save goes through napari's own menu action and writer (only the file
dialog's answer is given, as a person typing a file name)."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_granseg.recovery import RecoverySettings  # noqa: E402
from napari_granseg.recovery.prune import prune  # noqa: E402
from napari_granseg.recovery.session import current_session  # noqa: E402
from napari_granseg.widgets.recovery_hooks import RestoreOffer, record_write, saved_by_napari, store_for  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def store_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRANSEG_RECOVERY_DIR", str(tmp_path / "recovery"))
    monkeypatch.setenv("GRANSEG_RECOVERY_KEEP_DAYS", "2")
    monkeypatch.setenv("GRANSEG_RECOVERY_CRASH_KEEP_DAYS", "30")
    return tmp_path / "recovery"


def _save_selected_with_the_menu(viewer, monkeypatch, path) -> None:
    """File > Save Selected Layers..., the person typing ``path`` in the dialog."""
    from qtpy.QtWidgets import QFileDialog

    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), ""))
    action = viewer.window.file_menu.findAction("napari.window.file.save_layers_dialog.selected")
    assert action is not None and action.text().startswith("Save Selected Layers")
    action.trigger()
    assert path.exists()


def test_file_save_releases_the_saved_layer_only(make_napari_viewer, qtbot, store_dir, tmp_path, monkeypatch):
    viewer = make_napari_viewer()
    viewer.window.add_dock_widget(RestoreOffer(viewer), name="granseg")  # each GranSeg dock holds this row
    image = viewer.add_image(np.random.default_rng(0).integers(0, 900, (64, 48), dtype=np.uint16), name="cells")
    saved = viewer.add_labels(np.zeros((64, 48), np.int32), name="granseg labels")
    other = viewer.add_labels(np.zeros((64, 48), np.int32), name="granseg labels 2")
    for layer, value in ((saved, 3), (other, 5)):
        layer.data[10:20, 8:30] = value  # what a widget's commit writes, then records
        assert record_write(image, layer, (), layer.data == value, "interactive commit") == ""
    layer_entries = {e.name: e for e in store_for(image).entries()}
    assert layer_entries["granseg labels"].released is None

    viewer.layers.selection.active = saved
    _save_selected_with_the_menu(viewer, monkeypatch, tmp_path / "mine.tif")
    layer_entries = {e.name: e for e in store_for(image).entries()}
    assert layer_entries["granseg labels"].released is not None
    assert layer_entries["granseg labels 2"].released is None  # not saved: still the crash time

    # after this session, the saved layer's labels go after KEEP_DAYS (2), the unsaved one's after 30 days
    for e in store_for(image).entries():
        store_for(image)._entry(e.id).update_manifest(  # as this napari, once ended, leaves them
            session=dict(current_session(), id="ended", pid=2**22 + 9, started=1.0))
    prune(RecoverySettings.from_env(), now=time.time() + 3 * 86400)
    assert [e.name for e in store_for(image).entries()] == ["granseg labels 2"]


def test_a_write_after_the_save_makes_the_layer_unsaved_again(make_napari_viewer, qtbot, store_dir, tmp_path,
                                                              monkeypatch):
    viewer = make_napari_viewer()
    viewer.window.add_dock_widget(RestoreOffer(viewer), name="granseg")
    image = viewer.add_image(np.arange(40 * 40, dtype=np.uint16).reshape(40, 40), name="cells")
    labels = viewer.add_labels(np.zeros((40, 40), np.int32), name="granseg labels")
    labels.data[5:15, 5:15] = 1
    record_write(image, labels, (), labels.data == 1, "interactive commit")
    viewer.layers.selection.active = labels
    _save_selected_with_the_menu(viewer, monkeypatch, tmp_path / "labels.tif")
    assert store_for(image).entries()[0].released is not None
    labels.data[20:30, 20:30] = 2  # the person goes on: a new commit after the save
    record_write(image, labels, (), labels.data == 2, "interactive commit")
    assert store_for(image).entries()[0].released is None
    assert saved_by_napari() == []  # the file saved before holds the old pixels: not taken for the layer
    assert store_for(image).entries()[0].released is None
    # saving again with different pixels than the first file: the new file is compared, and matches
    _save_selected_with_the_menu(viewer, monkeypatch, tmp_path / "labels-2.tif")
    assert store_for(image).entries()[0].released is not None

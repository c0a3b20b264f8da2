"""The Fine-tune widget on a person's path: opened through the Plugins menu, a second training pair added with a
click, a name typed, Start clicked; a short real training run on a synthetic domain; the before/after score
shown, the model saved in the model cache, and listed by the interactive widget opened afterwards."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from qtpy.QtCore import Qt  # noqa: E402
from qtpy.QtTest import QTest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from person_path import open_widget  # noqa: E402

pytestmark = pytest.mark.gui
TIMEOUT_MS = 600_000


def test_finetune_widget_trains_saves_and_lists_the_model(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_granseg import zoo
    from napari_granseg.synthetic_domains import dark_blobs_scene
    from napari_granseg.widgets.finetune import FinetuneWidget
    from napari_granseg.widgets.interactive import InteractiveWidget

    monkeypatch.setenv("GRANSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GRANSEG_OFFLINE", "1")
    viewer = make_napari_viewer(show=True)
    for name, seed in (("a", 11), ("b", 12)):
        image, labels = dark_blobs_scene(size=64, n_objects=3, seed=seed)
        viewer.add_image(image, name=name)
        viewer.add_labels(labels, name=f"{name} labels")
    w = open_widget(viewer, "Fine-tune (UnSAMv2)", "menu", FinetuneWidget)
    assert [c.currentText() for c in w.pair_rows[0]] == ["a", "a labels"]
    QTest.mouseClick(w.add_pair_button, Qt.MouseButton.LeftButton)
    assert [c.currentText() for c in w.pair_rows[1]] == ["b", "b labels"]
    w.name_edit.selectAll()
    QTest.keyClicks(w.name_edit, "blobs-v1")
    w.steps.selectAll()
    QTest.keyClicks(w.steps, "4")
    w.steps.interpretText()
    QTest.mouseClick(w.start_button, Qt.MouseButton.LeftButton)
    assert w.busy and w.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT_MS)
    assert w.session.error == ""
    text = w.status.text()
    assert "before" in text and "after" in text and "blobs-v1" in text, text
    saved = zoo.finetuned_dir() / "blobs-v1.pt"
    assert saved.is_file() and w.session.result.info["finetune"]["steps"] == 4
    other = open_widget(viewer, "Interactive (UnSAMv2)", "menu", InteractiveWidget)
    qtbot.waitUntil(lambda: other.model_combo.findText("blobs-v1") >= 0, timeout=120_000)
    assert zoo.load_model("blobs-v1").name == "blobs-v1"

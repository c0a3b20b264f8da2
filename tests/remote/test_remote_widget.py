"""The interactive widget with compute = a dask scheduler (the session's LocalCluster on 127.0.0.1): connect
in a worker, the model loads on the dask worker, a real click previews the right cell; a refused address is a
message in the status line; a worker killed mid-preview gives the lost-worker message and the labels stay."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

sys.path.insert(0, str(Path(__file__).parents[1] / "widgets"))
from test_person_paths import TIMEOUT_MS, WIDGET, _iou, click, key, show, wait_preview, wait_ready  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402

UNSAM = "unsamv2-demo"


@pytest.fixture
def viewer(make_napari_viewer):
    v = make_napari_viewer(show=True)
    v.window._qt_window.resize(900, 700)
    return v


def _remote_widget(viewer, qtbot, cluster, image):
    from napari_granseg.remote import RemotePredictor

    viewer.add_image(image, name="cells")
    _dock, w = viewer.window.add_plugin_dock_widget("napari-granseg", WIDGET)
    w.model_combo.setCurrentText(UNSAM)
    w.compute.apply(cluster.scheduler_address)
    qtbot.waitUntil(lambda: isinstance(w.predictor, RemotePredictor) and not w.busy, timeout=4 * TIMEOUT_MS)
    show(viewer)
    wait_ready(w, qtbot)
    return w


def test_a_refused_address_is_a_message_not_a_traceback(viewer, qtbot):
    _dock, w = viewer.window.add_plugin_dock_widget("napari-granseg", WIDGET)
    w.compute.apply("tcp://192.0.2.1:8786")     # another machine in plain text: refused before connecting
    qtbot.waitUntil(lambda: not w.compute.connecting and bool(w.compute.last_error) and not w.busy, timeout=TIMEOUT_MS)
    assert w.compute.session is None and w.compute.combo.currentText() == "this machine"
    assert "SSH" in w.compute.last_error and "allow_insecure_remote" in w.compute.last_error
    assert w.last_message == ("error", w.compute.last_error) and w.compute.last_error in w.status.text()


def test_remote_preview_of_a_real_click_and_a_lost_worker(viewer, qtbot, cluster, nested_scenes):
    scene = nested_scenes[0]
    w = _remote_widget(viewer, qtbot, cluster, scene.image)
    assert w.compute.address == cluster.scheduler_address and w.demo_banner.isVisible()
    w.granularity = 1.0
    click(viewer, scene.centers[0])
    mask = wait_preview(w, qtbot)
    assert _iou(mask, scene.masks[2][0]) > 0.5 and _iou(mask, scene.masks[2][1]) < 0.1
    key(viewer, Qt.Key.Key_C)
    qtbot.waitUntil(lambda: w.last_commit is not None, timeout=TIMEOUT_MS)
    before = np.asarray(w.labels_layer.data).copy()
    assert _iou(before == 1, scene.masks[2][0]) > 0.5

    pred = w.predictor
    pid = pred.info()["pid"]
    original = pred.predict

    def killed_mid_preview(*args, **kwargs):  # the worker dies while this preview is asked for
        os.kill(pid, signal.SIGKILL)
        return original(*args, **kwargs)

    pred.predict = killed_mid_preview
    click(viewer, scene.centers[1])
    qtbot.waitUntil(lambda: "stopped" in w.status.text() and not w.busy, timeout=4 * TIMEOUT_MS)
    assert "your local labels are unchanged" in w.status.text() and w.last_message[0] == "error"
    assert np.array_equal(np.asarray(w.labels_layer.data), before)
    assert w.preview_mask is None
    pred.predict = original
    cluster_client = pred.session.client
    cluster_client.wait_for_workers(1, timeout=120)   # the nanny's new worker, for the tests that follow


def test_segment_everything_widget_runs_on_the_worker_with_the_same_labels(make_napari_viewer, qtbot, cluster,
                                                                        one_thread):
    """Compute = the scheduler: Run sends the image to the worker, the labels that come back are the ones a
    local run gives (fp32 on both sides), and the layer is added as for a local run."""
    import napari_granseg as gs
    from napari_granseg.sample_data import nested_cells_sample_scene

    viewer = make_napari_viewer()
    viewer.open_sample("napari-granseg", "nested_cells")
    _dock, w = viewer.window.add_plugin_dock_widget("napari-granseg", "Segment everything (UnSAMv2)")
    w.model_combo.setCurrentText(UNSAM)
    w.precision.setCurrentText("fp32")
    w.compute.apply(cluster.scheduler_address)
    qtbot.waitUntil(lambda: w.compute.session is not None and not w.compute.connecting, timeout=4 * TIMEOUT_MS)
    w.granularity.setText("1.0")
    w.points.setValue(8)
    qtbot.mouseClick(w.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not w.busy, timeout=4 * TIMEOUT_MS)
    assert w.last_error == "" and "DEMO" in w.model_badge.text()
    got = np.asarray(viewer.layers["everything g=1"].data)
    scene = nested_cells_sample_scene()
    want = gs.segment_everything(scene.image, 1.0, model=gs.load_model(UNSAM, device="cpu"), precision="fp32",
                                 points_per_side=8)
    assert np.array_equal(got, want)


def test_fewshot_widget_runs_on_the_worker_with_the_same_labels(make_napari_viewer, qtbot, cluster, one_thread):
    """Compute = the scheduler: the references and each target slice go to the worker; the series' labels are
    the ones the local run of the same widget gives (fp32 on both sides)."""
    from napari_granseg.synthetic import shapes_scene

    rng = np.random.default_rng(5)
    scenes = [shapes_scene(size=128, n_objects=4, rng=rng) for _ in range(3)]
    images, truth = np.stack([s[0] for s in scenes]), np.stack([s[1] for s in scenes])
    refs = np.zeros_like(truth)
    refs[0] = truth[0] == 1
    viewer = make_napari_viewer()
    viewer.add_image(images, name="series")
    viewer.add_labels(refs, name="refs")
    _dock, w = viewer.window.add_plugin_dock_widget("napari-granseg", "Few-shot series (SANSA)")
    w.model_edit.setText("sansa-demo")
    w.size_combo.setCurrentText("model size")
    w.precision.setCurrentText("fp32")
    outputs = []
    for address in (None, cluster.scheduler_address):
        if address is not None:
            w.compute.apply(address)
            qtbot.waitUntil(lambda: w.compute.session is not None and not w.compute.connecting,
                            timeout=4 * TIMEOUT_MS)
        qtbot.mouseClick(w.run_button, Qt.LeftButton)
        qtbot.waitUntil(lambda: not w.busy, timeout=4 * TIMEOUT_MS)
        assert w.last_error == ""
        outputs.append(np.asarray(w.output_layer.data).copy())
    assert "DEMO" in w.model_badge.text() and cluster.scheduler_address in w.model_badge.text()
    assert outputs[0][1:].any() and np.array_equal(outputs[0], outputs[1])

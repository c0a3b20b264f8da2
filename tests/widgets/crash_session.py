"""napari run as a person runs it, in its own process, for the crash-recovery test (not a test module).

``python crash_session.py commit IMAGE.tif OUT_DIR ROW COL``: File > Open the TIFF, open the interactive widget
from the plugin, click the cell at (ROW, COL) on the canvas, press Commit, save what the labels layer holds to
OUT_DIR/committed.npy, then die at once (``os._exit``: no normal end, as in a crash or a killed job).

``python crash_session.py restore IMAGE.tif OUT_DIR``: open the same file and the widget, wait for the
"Restore ..." button, click it, save the restored layer to OUT_DIR/restored.npy and what the dock says to
OUT_DIR/restored.json.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def _wait(condition, what: str, timeout: float = 240.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while not condition():
        QApplication.processEvents()
        time.sleep(0.02)
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")


def _click(viewer, rc) -> None:
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtTest import QTest

    cam, native = viewer.camera, viewer.window._qt_viewer.canvas.native
    x = (rc[1] - cam.center[-1]) * cam.zoom + native.width() / 2
    y = (rc[0] - cam.center[-2]) * cam.zoom + native.height() / 2
    QTest.mouseClick(native, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     QPoint(int(round(x)), int(round(y))))


def _press(button) -> None:
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    QTest.mouseClick(button, Qt.MouseButton.LeftButton)


def main(phase: str, image: str, out_dir: str, *rc: str) -> None:
    from napari_granseg.__main__ import load_before_opengl

    load_before_opengl()  # as napari's launcher does: torch's GPU compiler before the first OpenGL draw
    import napari
    from qtpy.QtWidgets import QApplication

    out = Path(out_dir)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(900, 700)
    viewer.open(image)  # what File > Open does
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-granseg", "Interactive (UnSAMv2)")
    if phase == "commit":
        _wait(lambda: widget.predictor is not None and widget.prompts.is_active() and not widget.busy, "the widget")
        viewer.reset_view()
        QApplication.processEvents()
        widget.granularity = 1.0
        _click(viewer, (float(rc[0]), float(rc[1])))
        _wait(lambda: widget.preview_mask is not None and not widget.busy, "the preview")
        _press(widget.commit_button)
        _wait(lambda: "committed label" in widget.status.text(), "the commit")
        np.save(out / "committed.npy", np.asarray(viewer.layers["granseg labels"].data))
        os._exit(0)  # napari dies here: no aboutToQuit, no atexit, nothing saved by hand
    from napari_granseg.widgets.recovery_hooks import RestoreOffer

    [offer] = widget.findChildren(RestoreOffer)
    _wait(lambda: offer.restore_button.isVisible(), "the Restore button", timeout=90)
    button = offer.restore_button.text()
    _press(offer.restore_button)
    _wait(lambda: "granseg labels" in viewer.layers, "the restored layer")
    np.save(out / "restored.npy", np.asarray(viewer.layers["granseg labels"].data))
    (out / "restored.json").write_text(json.dumps({
        "button": button, "message": offer.message.text(), "status": widget.status.text(),
        "visible_after": offer.restore_button.isVisible(), "layers": [layer.name for layer in viewer.layers]}))
    os._exit(0)


if __name__ == "__main__":
    main(*sys.argv[1:])

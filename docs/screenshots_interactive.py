"""Screenshots of the interactive widget for docs/widgets.md (docs/images/interactive_*.png), taken the way a
person works: the widget opened through napari's plugin API, real mouse clicks and keys on the canvas.

Run (needs a display; headless: Xvfb)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshots_interactive.py [--model unsamv2-demo]

It opens napari with synthetic nested cells, opens "Interactive (UnSAMv2)" from the plugin (which loads the
model in its worker), clicks a nucleolus on the canvas, moves the granularity slider from 0.1 to 0.5, presses
C, then does the same on a stack and presses Propagate. The model runs on the CPU in the widget's workers;
this script only waits for them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from make_screenshots import wait_until  # noqa: E402 (docs/ is on the path when run as a script)

WIDGET = "Interactive (UnSAMv2)"


def canvas_point(viewer, rc):
    """Data (row, col) of the 2D view -> the canvas pixel a person would click."""
    from qtpy.QtCore import QPoint

    cam, native = viewer.camera, viewer.window._qt_viewer.canvas.native
    x = (rc[1] - cam.center[-1]) * cam.zoom + native.width() / 2
    y = (rc[0] - cam.center[-2]) * cam.zoom + native.height() / 2
    return QPoint(int(round(x)), int(round(y)))


def click(viewer, rc) -> None:
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    QTest.mouseClick(viewer.window._qt_viewer.canvas.native, Qt.MouseButton.LeftButton,
                     Qt.KeyboardModifier.NoModifier, canvas_point(viewer, rc))


def press(viewer, key) -> None:
    from qtpy.QtTest import QTest

    QTest.keyClick(viewer.window._qt_viewer.canvas.native, key)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unsamv2-demo", help="zoo name or checkpoint typed in the Model box")
    parser.add_argument("--out", default=str(Path(__file__).parent / "images"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import napari
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from qtpy.QtCore import Qt

    from napari_granseg.synthetic import nested_cells_scene, nested_cells_stack

    viewer = napari.Viewer(title="napari-granseg: interactive", show=True)
    viewer.window._qt_window.resize(1500, 900)
    scene = nested_cells_scene(size=128, n_cells=2, seed=10_001)
    viewer.add_image(scene.image, name="nested cells", colormap="gray")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-granseg", WIDGET)
    if args.model != widget.model_combo.currentText():
        widget.model_combo.setCurrentText(args.model)
        widget.load_button.click()
    wait_until(lambda: widget.model is not None and widget.prompts.is_active() and not widget.busy)
    viewer.reset_view()

    def shot(name: str) -> None:
        wait_until(lambda: not widget.busy)
        for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
            toast.close()  # no notification toasts over the screenshots
        wait_until(lambda: True)
        viewer.screenshot(path=str(out / f"interactive_{name}.png"), canvas_only=False)
        print("wrote", out / f"interactive_{name}.png", "|", widget.status.text())

    shot("widget")
    widget.granularity_slider.setValue(0.1)
    click(viewer, scene.centers[0])
    wait_until(lambda: widget.preview_mask is not None and not widget.busy)
    shot("preview_fine")
    widget.granularity_slider.setValue(0.5)  # the demo model is most reliable at the nucleus level
    shot("preview_coarse")
    press(viewer, Qt.Key.Key_C)
    wait_until(lambda: widget.labels_layer is not None and widget.labels_layer.data.any())
    shot("committed")

    # ---- a stack: click on the middle slice, commit, propagate
    stack, scenes = nested_cells_stack(n_slices=6, size=128, seed=20_010, drift=2.0, n_cells=2)
    viewer.layers.clear()
    viewer.add_image(stack, name="cell stack", colormap="gray")   # the widget follows the new image
    wait_until(lambda: widget.prompts.image_name == "cell stack" and widget.prompts.is_active())
    viewer.reset_view()
    viewer.dims.set_current_step(0, 3)
    widget.granularity_slider.setValue(1.0)
    click(viewer, scenes[3].centers[0])
    wait_until(lambda: widget.preview_mask is not None and not widget.busy)
    shot("stack_preview")
    press(viewer, Qt.Key.Key_C)
    wait_until(lambda: widget.last_commit is not None and not widget.busy)
    widget.propagate_button.click()
    wait_until(lambda: not widget.busy and widget.labels_layer.data[0].any(), timeout=600)
    viewer.dims.set_current_step(0, 0)
    shot("propagated")
    viewer.close()


if __name__ == "__main__":
    main()

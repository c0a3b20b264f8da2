"""Screenshots of the widgets for docs/widgets.md and docs/finetune.md (docs/images/<widget>_*.png).

Run (needs a display; headless: Xvfb)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshots.py [--model unsamv2-demo] [--out docs/images]

The interactive shots come from docs/screenshots_interactive.py (the widget opened from the Plugins dock,
real clicks and keys on the canvas); then "Segment everything" at g=0.1 and 1.0 on the nested-cells sample,
and the few-shot widget on the "shapes series" sample (2 labelled slices -> the other 6) with the SANSA demo
model, both opened from the Plugins menu and run by clicking Run, as a person does; then the fine-tune widget
on four labelled images of a domain the demo never saw, its pairs added with "+ pair" and Start clicked
(``--only everything,fewshot,finetune`` shoots only those). The models run on the CPU in the widgets' background workers; this
script only waits for them.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def wait_until(condition, timeout: float = 300.0) -> None:
    """Process Qt events until ``condition()`` is true (the widget's workers report through the event loop)."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while not condition():
        QApplication.processEvents()
        time.sleep(0.01)
        if time.monotonic() > end:
            raise TimeoutError("the widget did not finish in time")
    for _ in range(20):  # let napari draw the result
        QApplication.processEvents()
        time.sleep(0.01)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unsamv2-demo")
    parser.add_argument("--out", default=str(Path(__file__).parent / "images"))
    parser.add_argument("--only", default="interactive,everything,fewshot,finetune",
                        help="comma list of the widgets to shoot (interactive, everything, fewshot, finetune)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = {w.strip() for w in args.only.split(",")}
    from napari_granseg.__main__ import load_before_opengl

    load_before_opengl()  # as `python -m napari_granseg` does: the model libraries before OpenGL (Xvfb)
    if "interactive" in only:  # the person's path: Plugins dock, real clicks and keys (one script for it)
        from screenshots_interactive import main as shoot_interactive

        shoot_interactive(["--model", args.model, "--out", str(out)])
    if not only & {"everything", "fewshot", "finetune"}:
        return
    import napari

    viewer = napari.Viewer(title="napari-granseg", show=True)
    viewer.window._qt_window.resize(1500, 900)
    if "everything" in only:
        shoot_everything(viewer, None, out)
    if "fewshot" in only:
        shoot_fewshot(viewer, out)
    if "finetune" in only:
        shoot_finetune(viewer, out)
    viewer.close()


def _clear(viewer) -> None:
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)


def _save(viewer, path: Path, status: str) -> None:
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    wait_until(lambda: True)
    viewer.screenshot(path=str(path), canvas_only=False)
    print("wrote", path, "|", status)


PLUGIN_MENU = "GranSeg UnSAMv2 and SANSA"  # the manifest's display_name: the Plugins submenu


def open_from_plugins_menu(viewer, widget_name: str):
    """Open a widget as a person does: trigger "Plugins > GranSeg UnSAMv2 and SANSA > widget_name"."""
    from napari._qt.widgets.qt_viewer_dock_widget import QtViewerDockWidget

    menu = viewer.window.plugins_menu
    menu.aboutToShow.emit()
    sub = next(a.menu() for a in menu.actions() if a.menu() is not None and a.text().replace("&", "") == PLUGIN_MENU)
    sub.aboutToShow.emit()
    next(a for a in sub.actions() if a.text().replace("&", "") == widget_name).trigger()
    wait_until(lambda: True)
    docks = viewer.window._qt_window.findChildren(QtViewerDockWidget)
    return next(d.widget() for d in docks if widget_name in d.name)


def click(button) -> None:
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    QTest.mouseClick(button, Qt.LeftButton)


def shoot_everything(viewer, model, out: Path) -> None:
    """Segment everything at g=0.1 and g=1.0 on the napari sample: two new Labels layers, linked by features.

    The person's path: File > Open Sample, the widget from the Plugins menu, Run clicked; ``model`` None = the
    widget's default (the bundled demo offline), else given to the widget (``--model``).
    """
    _clear(viewer)
    viewer.open_sample("napari-granseg", "nested_cells")
    widget = open_from_plugins_menu(viewer, "Segment everything (UnSAMv2)")
    if model is not None:
        widget.set_model(model)
    widget.granularity.setText("0.1, 1.0")
    # min stability stays "auto": the demo's recorded defaults (no IoU filter, stability 0.9, no M2M) apply
    wait_until(lambda: "finding" not in widget.model_badge.text())
    click(widget.run_button)
    wait_until(lambda: not widget.busy)
    viewer.layers["everything g=0.1"].visible = True
    viewer.reset_view()
    _save(viewer, out / "everything_widget.png", widget.status.text())
    viewer.window.remove_dock_widget("all")


def shoot_fewshot(viewer, out: Path) -> None:
    """The few-shot widget on the "shapes series" sample with the bundled SANSA demo (the widget's default),
    opened from the Plugins menu and run with a click."""
    _clear(viewer)
    viewer.open_sample("napari-granseg", "shapes_series")
    widget = open_from_plugins_menu(viewer, "Few-shot series (SANSA)")
    widget.size_combo.setCurrentText("model size")
    click(widget.run_button)
    wait_until(lambda: not widget.busy)
    viewer.layers["reference labels"].visible = False
    viewer.dims.set_current_step(0, 4)
    viewer.reset_view()
    _save(viewer, out / "fewshot_widget.png", widget.status.text())
    viewer.window.remove_dock_widget("all")


def shoot_finetune(viewer, out: Path, steps: int = 150) -> None:
    """The fine-tune widget from the Plugins menu: four images of dark lobed blobs (a domain the demo model never
    saw) with their Labels layers, a pair row added per image with "+ pair", a name typed, Start clicked; the
    shot shows the held-back score before and after in the status line."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    from napari_granseg.synthetic_domains import dark_blobs_scene

    _clear(viewer)
    for seed in range(4):
        image, labels = dark_blobs_scene(size=128, seed=seed)
        viewer.add_image(image, name=f"blobs {seed}")
        viewer.add_labels(labels, name=f"blobs {seed} labels", visible=seed == 0)
    for seed in range(1, 4):
        viewer.layers[f"blobs {seed}"].visible = False
    widget = open_from_plugins_menu(viewer, "Fine-tune (UnSAMv2)")
    for _ in range(3):
        click(widget.add_pair_button)
    widget.name_edit.selectAll()
    QTest.keyClicks(widget.name_edit, "blobs-v1")
    widget.steps.selectAll()
    QTest.keyClicks(widget.steps, str(steps))
    widget.steps.interpretText()
    QTest.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    wait_until(lambda: not widget.busy, timeout=1800)
    viewer.reset_view()
    _save(viewer, out / "finetune_widget.png", widget.status.text())
    viewer.window.remove_dock_widget("all")


if __name__ == "__main__":
    main()

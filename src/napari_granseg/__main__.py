"""``python -m napari_granseg``: open napari with sample data and the interactive widget (the README's first command).

``--headless`` instead segments the bundled sample image with the default model (the demo when no real
checkpoint is cached) and writes label TIFFs, so the first command shows real segmentation without a screen.
``--check`` builds the same window as the plain command but does not enter the event loop: it prints the layers
and dock widgets and returns (used by the test of this command; ``--screenshot PATH`` also saves the window).

The window is interactive from its first frame: the widget loads its model in a worker thread, and torch's
import there does not hold the GUI thread (``widgets/_quiet_import.py``). An earlier version imported torch on
the GUI thread before the event loop, which froze the freshly shown window for ~2 s.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m napari_granseg", description=__doc__)
    ap.add_argument("--headless", action="store_true", help="no GUI: segment the sample and write TIFFs")
    ap.add_argument("--out", default="granseg_sample_output", help="output folder for --headless")
    ap.add_argument("--model", default=None, help="zoo name or checkpoint (default: best available)")
    ap.add_argument("--check", action="store_true",
                    help="open the window, print its layers and docks, and return without the event loop")
    ap.add_argument("--screenshot", default=None, help="with --check: save a screenshot of the window here")
    args = ap.parse_args(argv)
    if args.headless:
        _headless(Path(args.out), args.model)
        return None
    viewer, widget = open_viewer()
    if not args.check:
        import napari

        napari.run()
        return None
    import time

    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + 300  # the widget loads its model in a worker: let it finish, as a person waits
    while (widget.busy or widget.model is None) and time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)
    QApplication.processEvents()
    print(f"model: {widget.model}")
    docks = sorted(viewer.window.dock_widgets)
    print(f"layers: {[layer.name for layer in viewer.layers]}")
    print(f"docks: {docks}")
    if args.screenshot:
        viewer.screenshot(args.screenshot, canvas_only=False)
        print(f"screenshot: {args.screenshot}")
    return viewer


def open_viewer():
    """The README's first command: napari with the nested-cells sample and the interactive widget; returns
    (viewer, widget)."""
    import napari

    viewer = napari.Viewer()
    viewer.open_sample("napari-granseg", "nested_cells")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-granseg", "Interactive (UnSAMv2)")
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()  # the dock narrows the canvas: fit the sample to what is left of it
    viewer.reset_view()
    return viewer, widget


def _headless(out: Path, model_name: str | None) -> None:
    import tifffile

    import napari_granseg as gs
    from napari_granseg.io import atomic_path
    from napari_granseg.sample_data import nested_cells_sample_scene

    scene = nested_cells_sample_scene()  # = the napari sample
    model = gs.load_model(model_name)
    print(f"model: {model}{'  <- DEMO model trained on synthetic cells only' if model.is_demo else ''}")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "sample_image.tif") as tmp:
        tifffile.imwrite(tmp, scene.image)
    points = [(round(r), round(c)) for r, c in scene.centers]
    for g in (0.1, 0.5, 1.0):
        labels = gs.segment(scene.image, points=points, granularity=g, model=model)
        with atomic_path(out / f"sample_labels_g{g:.1f}.tif") as tmp:
            tifffile.imwrite(tmp, labels)
        sizes = [int((labels == i).sum()) for i in range(1, len(points) + 1)]
        print(f"g={g:.1f}: object areas (px) for clicks on the nucleoli: {sizes}")
    truth = {lvl: [int(m.sum()) for m in scene.masks[i]] for i, lvl in enumerate(("nucleolus", "nucleus", "cell"))}
    print(f"true areas: {truth}")
    print(f"wrote {out}/sample_image.tif and sample_labels_g*.tif")


if __name__ == "__main__":
    main()

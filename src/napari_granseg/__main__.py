"""Open napari with a sample image and the interactive segmentation widget, ready for your first click.

The model libraries are loaded first (a few seconds), so that the window responds at once; the widget then
loads its model in the background, and the model list, the DEMO badge and the prompt layers appear a moment
later. Without a real checkpoint in the cache the bundled demo model is
used (trained on synthetic cells only: good for trying the plugin, not for your data).

--headless segments the bundled sample image without a screen and writes label TIFFs you can open anywhere.
--check opens the same window, waits until the model is loaded, prints the layers and panels and closes again
(a quick test that the installation works; --screenshot also saves a picture of the window).

Running napari through this command is also the way to use the plugin on a machine whose graphics are drawn
in software (a VM, a remote desktop, Xvfb): it loads the model libraries before the window opens, which plain
`napari` cannot do on such machines without crashing.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m napari_granseg", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--headless", action="store_true",
                    help="no window: segment the sample image and write its label TIFFs to --out")
    ap.add_argument("--out", default="granseg_sample_output", help="output folder for --headless")
    ap.add_argument("--model", default=None, help="model name (e.g. unsamv2-plus) or checkpoint file (default: the best one you have, else the "
                         "demo)")
    ap.add_argument("--check", action="store_true",
                    help="open the window, wait for the model, print its layers and panels, then close")
    ap.add_argument("--screenshot", default=None, help="with --check: save a picture of the window to this file")
    args = ap.parse_args(argv)
    if args.headless:
        _headless(Path(args.out), args.model)
        return None
    load_before_opengl()
    preload_engines()
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


def load_before_opengl() -> bool:
    """Load triton (torch's GPU compiler, installed with CUDA builds of torch) before napari's first OpenGL
    context; returns whether it was loaded.

    Why: once napari has drawn with Mesa's software OpenGL (llvmpipe: VMs, remote desktops, Xvfb), loading
    triton crashes the process (two LLVMs in one process), and the model libraries load it. Loaded first, both
    live side by side. This is for launchers (this command, test and benchmark harnesses): the plugin itself
    never changes what is loaded in napari's process; on such a machine it asks to be started this way.
    """
    import importlib.util
    import sys

    if sys.platform.startswith("linux") and "libLLVM" in _process_map() and "libtriton" not in _process_map():
        return False  # too late: OpenGL is already drawing in software; loading triton now would crash
    try:
        if importlib.util.find_spec("triton") is None:
            return False
        import triton  # noqa: F401 - loaded for its side effect on the process's libraries
    except Exception:  # noqa: BLE001 - a broken triton: torch will not use it either
        return False
    return True


def preload_engines() -> None:
    """Import torch, sam2 and the segmentation engines before the window opens.

    Why: importing them takes a few seconds and, even in a background thread, briefly holds up whatever else
    Python runs (loading torch's compiled libraries cannot be interleaved); before the window exists nobody
    waits on it, so the window then answers every click from its first frame. Only this command does it: in a
    plain ``napari`` the widgets import them in the background on first use.
    """
    import sys
    import time

    from .widgets._common import import_engines

    start = time.monotonic()
    print("loading the model libraries (torch, sam2)…", end="", flush=True, file=sys.stderr)
    import_engines("napari_granseg.api", "napari_granseg.engine.interactive", "napari_granseg.engine.automatic")
    print(f" {time.monotonic() - start:.1f} s", file=sys.stderr)


def _process_map() -> str:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


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

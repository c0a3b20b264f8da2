"""How long napari's GUI thread stalls in each phase of using the plugin's widgets (event-loop gaps).

A 10 ms QTimer on the GUI thread records the time between its ticks; the longest gap of a phase is how long the
viewer was frozen (a person notices ~100 ms). Phases, each driven the way a person does it (real clicks on the
buttons and the canvas, the widgets opened through napari's plugin machinery):

  open_interactive, load_model, first_click, slider, propagate      (Interactive (UnSAMv2))
  open_everything, everything                                         (Segment everything (UnSAMv2), 3 levels)
  open_fewshot, fewshot                                               (Few-shot series (SANSA))

Models: the bundled demo models (the default offline), so the numbers measure the GUI plumbing, not a large
model. Needs a display: run under Xvfb, e.g.::

    xvfb-run -a -s "-screen 0 1600x1200x24" python benchmarks/gui_stall.py --size 1024

Baseline (same run, fresh process, skipped with ``--no-baseline``): napari alone adding the layers the widgets
add (the first Labels/Points/Shapes layer, an int32 Labels layer, a 6-slice one); a phase that adds a layer cannot
stall less than napari's own addition of it. ``--trace`` samples the GUI thread's stack during the longest gap of
each phase and prints where it was.

Prints a table and writes JSON to benchmarks/results/gui_stall[_<tag>].json. ``--tag before`` with
PYTHONPATH pointing at another checkout's ``src`` measures that code with the same script.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
TIMEOUT_S = 600
PHASE_TIMEOUT_S = 180  # a phase that does not finish (e.g. a click that previews nothing) is recorded as such


class StallMeter:
    """Longest gap between ticks of a 10 ms timer on the GUI thread, per phase."""

    def __init__(self, interval_ms: int = 10):
        from qtpy.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.last = time.perf_counter()
        self.max_gap = 0.0
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.max_gap = max(self.max_gap, now - self.last)
        self.last = now

    def reset(self) -> None:
        self.last = time.perf_counter()
        self.max_gap = 0.0


class StallTracer:
    """Samples the GUI thread's Python stack while it is stalled, so a long gap names the code behind it.

    A daemon thread looks every 5 ms; while the meter has not ticked for ``threshold_s`` it records the GUI
    thread's innermost frames from the plugin, napari, vispy, torch or Qt, counted per phase. (A C call that
    holds the interpreter lock stalls this thread too; the sample after it still names the Python caller.)
    """

    def __init__(self, meter: "StallMeter", threshold_s: float = 0.05):
        import sys
        import threading

        self.meter, self.threshold_s = meter, threshold_s
        self.main_id = threading.main_thread().ident
        self.samples: list[tuple[float, str]] = []  # (tick that began the gap, stack)
        self._sys = sys
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(0.005)
            began = self.meter.last
            if time.perf_counter() - began < self.threshold_s:
                continue
            frame = self._sys._current_frames().get(self.main_id)
            stack, ours = [], ""
            while frame is not None:
                code = frame.f_code
                where = f"{Path(code.co_filename).name}:{frame.f_lineno} {code.co_name}"
                if len(stack) < 3 and "gui_stall" not in code.co_filename:
                    stack.append(where)
                if not ours and "napari_granseg" in code.co_filename and len(stack) >= 3:
                    ours = " ... " + where
                frame = frame.f_back
            self.samples.append((began, " < ".join(stack) + ours))

    def take(self, top: int = 5) -> list[tuple[int, str]]:
        """Where the GUI thread was during the longest stall since the last call (samples ~5 ms apart)."""
        import collections

        by_gap: dict[float, list[str]] = collections.defaultdict(list)
        for began, stack in self.samples:
            by_gap[began].append(stack)
        self.samples = []
        if not by_gap:
            return []
        longest = max(by_gap.values(), key=len)
        return [(n, s) for s, n in collections.Counter(longest).most_common(top)]


def pump_until(condition, timeout_s: float = TIMEOUT_S, settle_ms: int = 200) -> None:
    """Run the Qt event loop until ``condition()`` holds, then ``settle_ms`` more (late callbacks count)."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    start = time.perf_counter()

    def check():
        if condition() or time.perf_counter() - start > timeout_s:
            loop.quit()
        else:
            QTimer.singleShot(5, check)

    QTimer.singleShot(0, check)
    loop.exec_() if hasattr(loop, "exec_") else loop.exec()
    if time.perf_counter() - start > timeout_s:
        raise TimeoutError("phase did not finish in time")
    end = QEventLoop()
    QTimer.singleShot(settle_ms, end.quit)
    end.exec_() if hasattr(end, "exec_") else end.exec()


def _busy(widget) -> bool:
    busy = getattr(widget, "busy", None)
    if busy is not None:
        return bool(busy)
    return bool(widget.task.running)  # an everything widget without ``busy``


def click(widget) -> None:
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    QTest.mouseClick(widget, Qt.LeftButton)


def click_canvas(viewer, row: float, col: float) -> None:
    """A person's left click on the canvas at data (row, col) of a 2D view."""
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtTest import QTest

    canvas = viewer.window._qt_viewer.canvas
    native = canvas.native
    cam = viewer.camera
    x = (col - cam.center[-1]) * cam.zoom + native.width() / 2
    y = (row - cam.center[-2]) * cam.zoom + native.height() / 2
    QTest.mouseClick(native, Qt.LeftButton, Qt.NoModifier, QPoint(int(x), int(y)))


def scene_image(size: int) -> tuple[np.ndarray, tuple[float, float]]:
    """A 16-bit nested-cells image of ``size`` px and one nucleolus (row, col)."""
    from napari_granseg.synthetic import nested_cells_scene

    scene = nested_cells_scene(size=size, n_cells=3, seed=7)
    return scene.image, tuple(scene.centers[0])


def measure_phase(meter: StallMeter, tracer: "StallTracer | None", action, done, note: str = "",
                  settle_ms: int = 200) -> dict:
    """Run ``action()``, pump the event loop until ``done()`` (+ ``settle_ms``): the phase's longest GUI gap."""
    meter.reset()
    if tracer:
        tracer.take()
    t0 = time.perf_counter()
    action()
    finished = True
    try:
        pump_until(done, timeout_s=PHASE_TIMEOUT_S, settle_ms=settle_ms)
    except TimeoutError:
        finished = False
        note = f"DID NOT FINISH in {PHASE_TIMEOUT_S} s; {note}"
    row = {"max_gap_ms": round(meter.max_gap * 1000, 1), "duration_s": round(time.perf_counter() - t0, 2),
           "note": note, "finished": finished}
    if tracer:
        row["stalled_in"] = tracer.take()
    return row


def run(size: int, slices: int, phases: set[str], preload: bool = False,
        trace: bool = False) -> dict:  # noqa: C901 - linear phases
    try:  # as `python -m napari_granseg` does: Xvfb draws with software OpenGL
        from napari_granseg.__main__ import load_before_opengl

        load_before_opengl()
    except ImportError:  # code measured with --tag before may predate the launcher's function
        pass
    import napari

    viewer = napari.Viewer(show=True)
    if preload:  # torch, sam2 and the engines imported before the phases (isolates the import's share)
        from napari_granseg.widgets._common import import_engines

        import_engines("napari_granseg.api", "napari_granseg.engine.interactive", "napari_granseg.engine.automatic",
                       "napari_granseg.engine.fewshot", "napari_granseg.engine.propagate")
    meter = StallMeter()
    tracer = StallTracer(meter) if trace else None
    rows: dict[str, dict] = {}

    def phase(name: str, action, done, note: str = "") -> bool:
        if name not in phases:
            return True
        rows[name] = measure_phase(meter, tracer, action, done, note)
        row = rows[name]
        print(f"{name:18s} max gap {row['max_gap_ms']:8.1f} ms  ({row['duration_s']} s) {row['note']}", flush=True)
        for n, stack in row.get("stalled_in", []):
            print(f"    {n:4d} x  {stack}", flush=True)
        return row["finished"]

    def open_phase(name: str, widget_name: str):
        """The phase of opening a widget through napari's plugin machinery; returns the widget."""
        box = {}
        phase(name, lambda: box.update(w=viewer.window.add_plugin_dock_widget("napari-granseg", widget_name)[1]),
              lambda: True)
        return box.get("w") or viewer.window.add_plugin_dock_widget("napari-granseg", widget_name)[1]

    image, (r, c) = scene_image(size)
    pump_until(lambda: True)

    # ------------------------------------------------------------------ interactive
    if phases & {"open_interactive", "load_model", "first_click", "slider", "propagate"}:
        viewer.add_image(image, name="cells")
        pump_until(lambda: True, settle_ms=1500)  # napari's own first draw of the image is not the widget's
        w = open_phase("open_interactive", "Interactive (UnSAMv2)")
        phase("load_model", lambda: None, lambda: getattr(w, "predictor", None) is not None and not _busy(w))
        prompts = getattr(w, "prompts_layer", None)
        real = prompts is not None and w.prompts.is_active()  # the widget may hold napari's proxy of the layer
        note = "real canvas click" if real else "w.add_prompt (no prompts layer selected in add mode)"

        def first_click():
            if real:
                click_canvas(viewer, r, c)
            else:
                w.add_prompt((r, c))
        if not phase("first_click", first_click, lambda: w.preview_mask is not None and not _busy(w), note):
            phases = phases - {"slider", "propagate"}  # nothing to slide or commit without a preview

        def slide():
            for k, g in enumerate((0.3, 0.5, 0.7, 0.9, 1.0)):
                from qtpy.QtCore import QTimer

                QTimer.singleShot(120 * k, lambda g=g: w.granularity_slider.setValue(g))
        phase("slider", slide, lambda: abs(w.granularity_slider.value() - 1.0) < 1e-6 and not _busy(w)
              and w.preview_mask is not None)
        if "propagate" in phases:
            from napari_granseg.synthetic import nested_cells_stack

            stack, _ = nested_cells_stack(n_slices=slices, size=min(size, 256), seed=3, drift=2.0)
            viewer.layers.clear()
            viewer.add_image(stack, name="stack")
            w.image_combo.setCurrentText("stack")
            pump_until(lambda: not _busy(w))
            viewer.dims.set_current_step(0, 0)
            sr, sc = _stack_center(stack[0])
            w.add_prompt((sr, sc))
            pump_until(lambda: w.preview_mask is not None and not _busy(w))
            w.commit()
            pump_until(lambda: not _busy(w))
            phase("propagate", lambda: click(w.propagate_button), lambda: not _busy(w),
                  f"{slices} slices of {min(size, 256)} px")
        viewer.window.remove_dock_widget("all")
        viewer.layers.clear()

    # ------------------------------------------------------------------ everything
    if phases & {"open_everything", "everything"}:
        viewer.add_image(image, name="cells")
        pump_until(lambda: True, settle_ms=1500)  # napari's own first draw of the image is not the widget's
        w = open_phase("open_everything", "Segment everything (UnSAMv2)")
        pump_until(lambda: "finding" not in getattr(getattr(w, "model_badge", None), "text", lambda: "")())
        w.granularity.setText("0.1, 0.5, 1.0")
        w.points.setValue(8)
        phase("everything", lambda: click(w.run_button),
              lambda: not _busy(w) and sum(n.name.startswith("everything") for n in viewer.layers) == 3,
              f"3 levels, 8x8 points, {size} px")
        viewer.window.remove_dock_widget("all")
        viewer.layers.clear()

    # ------------------------------------------------------------------ few-shot
    if phases & {"open_fewshot", "fewshot"}:
        from napari_granseg.synthetic import shapes_scene

        rng = np.random.default_rng(5)
        fs_size = min(size, 512)
        scenes = [shapes_scene(size=fs_size, n_objects=4, rng=rng) for _ in range(slices)]
        images = np.stack([s[0] for s in scenes])
        refs = np.zeros(images.shape, np.int32)
        refs[0] = scenes[0][1]
        viewer.add_image(images, name="series")
        viewer.add_labels(refs, name="refs")
        pump_until(lambda: True, settle_ms=1500)
        w = open_phase("open_fewshot", "Few-shot series (SANSA)")
        w.size_combo.setCurrentText("model size")
        phase("fewshot", lambda: click(w.run_button),
              lambda: not _busy(w) and "refs few-shot" in viewer.layers, f"{slices} slices of {fs_size} px, "
              "first run (model load included)")
    viewer.close()
    return rows


def napari_baseline(size: int, slices: int, trace: bool = False) -> dict:
    """napari alone, no plugin: the layer additions the widgets make, timed the same way (the same-run floor).

    Run in a fresh process (``main`` starts one), so napari pays its first-layer costs (lazy imports, shader
    compilation: with Mesa's software OpenGL each new visual's first draw compiles its shaders on the CPU)
    exactly as it does when the plugin adds the same layers. A plugin phase that adds a layer cannot stall less
    than the matching row here.
    """
    import napari

    viewer = napari.Viewer(show=True)
    meter = StallMeter()
    tracer = StallTracer(meter) if trace else None
    image, _ = scene_image(size)
    viewer.add_image(image, name="cells")
    pump_until(lambda: True, settle_ms=1500)
    fs = min(size, 512)
    steps = [
        ("napari: add Labels (first, image size)",
         lambda: viewer.add_labels(np.zeros((size, size), np.uint8), name="preview", opacity=0.55)),
        ("napari: add Points (first, empty)",
         lambda: viewer.add_points(np.empty((0, 2)), name="points", features={"positive": np.zeros(0, bool)})),
        ("napari: add Shapes (first, empty)", lambda: viewer.add_shapes(None, ndim=2, name="shapes")),
        ("napari: add Labels (int32, image size)",
         lambda: viewer.add_labels(np.arange(size * size, dtype=np.int32).reshape(size, size) // 4096,
                                   name="level")),
        (f"napari: add Labels ({slices} x {fs} px)",
         lambda: viewer.add_labels(np.zeros((slices, fs, fs), np.int32), name="series")),
    ]
    rows = {}
    for name, action in steps:
        pump_until(lambda: True, settle_ms=500)
        rows[name] = measure_phase(meter, tracer, action, lambda: True, "baseline, fresh process", settle_ms=500)
    viewer.close()
    return rows


def _baseline_subprocess(args) -> dict:
    """:func:`napari_baseline` in a fresh interpreter (first-layer costs included), its rows as JSON."""
    import subprocess
    import sys

    cmd = [sys.executable, __file__, "--baseline-json", "--size", str(args.size), "--slices", str(args.slices)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _stack_center(img: np.ndarray) -> tuple[float, float]:
    """The brightest pixel (a nucleolus of the synthetic stack)."""
    idx = np.unravel_index(int(np.argmax(img)), img.shape)
    return float(idx[0]), float(idx[1])


def main(argv=None) -> None:
    all_phases = ["open_interactive", "load_model", "first_click", "slider", "propagate", "open_everything",
                  "everything", "open_fewshot", "fewshot"]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024, help="image size (px) of the 2D phases")
    ap.add_argument("--slices", type=int, default=6, help="slices of the propagate and few-shot stacks")
    ap.add_argument("--phases", default=",".join(all_phases), help="comma list of phases")
    ap.add_argument("--tag", default="", help="suffix of the JSON file (e.g. before / after)")
    ap.add_argument("--preload", action="store_true",
                    help="import torch, sam2 and the engines before the phases (isolates the import's share)")
    ap.add_argument("--trace", action="store_true",
                    help="sample the GUI thread's stack during stalls over 50 ms and print where it was")
    ap.add_argument("--no-baseline", action="store_true", help="skip napari's own layer additions (fresh process)")
    ap.add_argument("--baseline-json", action="store_true", help=argparse.SUPPRESS)  # the baseline's subprocess
    args = ap.parse_args(argv)
    if args.baseline_json:
        print(json.dumps(napari_baseline(args.size, args.slices)))
        return
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    baseline = {} if args.no_baseline else _baseline_subprocess(args)
    rows = run(args.size, args.slices, phases, args.preload, args.trace)
    import napari_granseg

    print("\n| phase | longest GUI stall (ms) | phase duration (s) | note |\n|---|---|---|---|")
    for name, row in baseline.items():
        print(f"| {name} | {row['max_gap_ms']} | {row['duration_s']} | {row['note']} |")
    for name in all_phases:
        if name in rows:
            row = rows[name]
            print(f"| {name} | {row['max_gap_ms']} | {row['duration_s']} | {row['note']} |")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"gui_stall{'_' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps({"phases": rows, "napari_baseline": baseline, "size": args.size, "slices": args.slices,
                               "preload": args.preload,
                               "plugin": str(Path(napari_granseg.__file__).parent),
                               "machine": platform.platform(), "python": platform.python_version()}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

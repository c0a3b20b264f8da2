"""The viewer keeps drawing while the widgets set themselves up and show results.

``benchmarks/gui_stall.py`` measures the GUI thread's freezes in milliseconds; these tests check the behaviour
behind its numbers, without timing anything: napari draws between the layers a widget adds (one napari
``add_*`` per turn, not three in one freeze), and napari's first-layer imports are done by a worker before the
widget's layers appear.
"""
from __future__ import annotations

import sys

import pytest
from qtpy.QtCore import Qt

pytestmark = pytest.mark.gui

INTERACTIVE = "Interactive (UnSAMv2)"
EVERYTHING = "Segment everything (UnSAMv2)"


def _log_draws_and_layers(viewer, log: list) -> None:
    viewer.window._qt_viewer.canvas._scene_canvas.events.draw.connect(lambda _e: log.append("draw"))
    viewer.layers.events.inserted.connect(lambda e: log.append(e.value.name))


def _drawn_between(log: list, names: list[str]) -> None:
    """Each named layer was added, in this order, and the canvas was drawn between consecutive additions."""
    added = [x for x in log if x != "draw"]
    assert added == names, added
    at = [log.index(n) for n in names]
    for a, b in zip(at, at[1:]):
        assert "draw" in log[a + 1:b], f"no draw between {log[a]!r} and {log[b]!r}: {log}"


def test_interactive_widget_adds_its_layers_one_at_a_time(make_napari_viewer, qtbot, demo_unsamv2):
    from napari_granseg.widgets import _napari_warmup

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-granseg", "nested_cells")
    qtbot.wait(300)  # napari's own first draw of the image
    log: list = []
    _log_draws_and_layers(viewer, log)
    _dock, w = viewer.window.add_plugin_dock_widget("napari-granseg", INTERACTIVE)
    w.model = demo_unsamv2
    assert w.prompts_layer is None  # nothing is added on the GUI thread while the dock opens
    qtbot.waitUntil(lambda: w.prompts.is_active() and not w.busy, timeout=60_000)
    _drawn_between(log, ["granseg preview", "granseg prompts", "granseg boxes and scribbles"])
    assert _napari_warmup._warmed  # napari's lazy first-layer imports ran in the worker first
    assert "pandas" in sys.modules  # (the Points layer's features need it: imported by the warm-up)


def test_everything_levels_are_added_with_draws_between(make_napari_viewer, qtbot, no_cached_models):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-granseg", "nested_cells")
    _dock, w = viewer.window.add_plugin_dock_widget("napari-granseg", EVERYTHING)
    w.granularity.setText("0.1, 0.5, 1.0")
    w.points.setValue(4)
    qtbot.wait(300)
    log: list = []
    _log_draws_and_layers(viewer, log)
    qtbot.mouseClick(w.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not w.busy and len(viewer.layers) == 4, timeout=300_000)
    _drawn_between(log, ["everything g=0.1", "everything g=0.5", "everything g=1"])

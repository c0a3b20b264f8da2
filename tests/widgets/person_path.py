"""How a person opens the plugin's widgets, for the GUI tests: the Plugins menu or ``add_plugin_dock_widget``.

Both go through napari's plugin machinery (npe2 manifest, dock widget, the ``PublicOnlyProxy`` viewer the widget
receives), unlike building the widget class directly.
"""
from __future__ import annotations

import numpy as np

PLUGIN = "napari-granseg"
MENU_TITLE = "GranSeg UnSAMv2 and SANSA"  # the manifest display_name: the Plugins submenu (npe2: no trailing ")")


def _text(action) -> str:
    return action.text().replace("&", "")


def menu_action(viewer, widget_name: str):
    """The QAction "Plugins > GranSeg (UnSAMv2 + SANSA) > widget_name" of the viewer's window."""
    menu = viewer.window.plugins_menu
    menu.aboutToShow.emit()  # app-model menus fill themselves when shown
    titles = []
    for action in menu.actions():
        titles.append(_text(action))
        sub = action.menu()
        if sub is None or _text(action) != MENU_TITLE:
            continue
        sub.aboutToShow.emit()
        for inner in sub.actions():
            if _text(inner) == widget_name:
                return inner
        raise AssertionError(f"no {widget_name!r} in {MENU_TITLE}: {[_text(a) for a in sub.actions()]}")
    raise AssertionError(f"no {MENU_TITLE!r} submenu in the Plugins menu: {titles}")


def open_widget(viewer, widget_name: str, how: str, widget_class):
    """Open ``widget_name`` the way a person does (``how``: "menu" or "dock"); returns the widget instance."""
    if how == "dock":
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, widget_name)
        return widget
    menu_action(viewer, widget_name).trigger()
    docks = [d.widget() for d in viewer.window._qt_window.findChildren(_dock_type())]
    found = [w for w in docks if isinstance(w, widget_class)]
    assert len(found) == 1, docks
    return found[0]


def _dock_type():
    from napari._qt.widgets.qt_viewer_dock_widget import QtViewerDockWidget

    return QtViewerDockWidget


def best_iou(labels: np.ndarray, truth: np.ndarray) -> float:
    """The best IoU of one label of ``labels`` with the boolean mask ``truth``."""
    ids = np.unique(labels[truth])
    ious = [((labels == i) & truth).sum() / ((labels == i) | truth).sum() for i in ids[ids > 0]]
    return float(max(ious, default=0.0))


class OneSliceAtATime:
    """A stack backed by dask (one chunk per slice) that raises if more than one slice is read at once.

    As a napari layer's data it stands for a zarr/dask stack larger than memory: ``np.asarray(stack)`` or
    ``stack[a:b]`` (more than one slice) fail the test; ``reads`` counts the slices read.
    """

    def __init__(self, array: np.ndarray):
        import dask.array as da

        self._dask = da.from_array(array, chunks=(1,) + array.shape[1:])
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.reads = 0

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole stack was read into memory")

    def __getitem__(self, key):
        out = np.asarray(self._dask[key])
        if out.size > int(np.prod(self.shape[1:])):
            raise AssertionError(f"{out.shape} read at once: more than one slice ({key!r})")
        self.reads += 1
        return out

    def __len__(self) -> int:
        return self.shape[0]

"""The interactive widget: click an object, slide the granularity, commit it as a label; stacks too.

How it is built (see docs/widgets.md for the person's side, docs/architecture.md for the floors):

- :mod:`.session`: :class:`~.session.InteractiveSession`, every rule and all state, without Qt or napari
  (model, image plan, prompts through the layer port, the preview state machine, the last commit, status);
- :mod:`.layers`: the napari adapters (prompt layers, the preview layer, labels writes with one undo step
  each: background pixels only, Ctrl+Z works);
- :mod:`.view`: :class:`InteractiveWidget`, the QWidget: controls wired to session methods, rendering the
  session's published state.

Prompts live in two layers the widget creates for its image: clicks in the Points layer "granseg prompts"
(Shift+click or the negative toggle: negative), boxes and scribbles in the Shapes layer "granseg boxes and
scribbles". Only the prompts on the slice shown count: on a z-stack or time series the widget segments that
slice, with the stack's intensity range. After a click the worker also decodes a sweep of g values, so the
slider shows the nearest mask at once and the exact one when it rests. A commit right after a click waits
for the preview of that click; it never writes an older mask.

Console: ``dock, w = viewer.window.add_plugin_dock_widget("napari-granseg", "Interactive (UnSAMv2)")``,
then ``w.model = gs.load_model(...)``, ``w.predictor``, ``w.segment_points([(row, col)], granularity=0.3)``,
``w.commit()``, ``w.state``; ``w.session`` is the session itself.

Importing this package imports neither Qt nor napari: the widget class is imported when first asked for.
"""
from __future__ import annotations

from typing import Any

from .._common import WidgetError
from .shortcuts import SHORTCUTS, shortcuts_text

__all__ = ["InteractiveWidget", "WidgetError", "SHORTCUTS", "shortcuts_text"]


def __getattr__(name: str) -> Any:
    if name == "InteractiveWidget":
        from .view import InteractiveWidget

        return InteractiveWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

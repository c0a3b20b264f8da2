"""The interactive widget's keyboard shortcuts: one table, bound on the prompt layers (active while clicking),
listed in the help panel and quoted in docs/widgets.md."""
from __future__ import annotations

__all__ = ["G_STEP", "SHORTCUTS", "shortcuts_text"]

G_STEP = 0.05

#: (key as napari writes it, action, description). Bound on the prompt layers (active while clicking).
SHORTCUTS: tuple[tuple[str, str, str], ...] = (
    ("Shift+click", "", "negative click (in the prompts layer's add mode)"),
    ("C", "commit", "commit the preview as a new label (then start the next object)"),
    ("N", "next_object", "next object: discard the current prompts and preview"),
    ("T", "toggle_negative", "toggle negative clicks"),
    (".", "granularity_up", f"granularity + {G_STEP}"),
    (",", "granularity_down", f"granularity - {G_STEP}"),
    ("K", "mode_click", "click mode: clicks are point prompts"),
    ("B", "mode_box", "box mode: drag a rectangle around the object"),
    ("D", "mode_scribble", "scribble mode: draw a line over the object"),
    ("R", "run", "run the prompts placed so far (when the live preview is off)"),
    ("Shift+P", "propagate", "propagate the last committed object through the stack"),
    ("Control+Z", "undo", "undo the last commit/propagation (in the target labels layer)"),
    ("Control+Shift+Z", "redo", "redo"),
)


def shortcuts_text() -> str:
    """The shortcut list shown in the help panel (and docs/widgets.md)."""
    return "Shortcuts (while a granseg prompt layer is selected):\n" + "\n".join(
        f"  {k}: {d}" for k, _, d in SHORTCUTS)

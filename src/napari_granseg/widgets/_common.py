"""What every dock widget of the plugin shares: user errors vs bugs, notifications, the DEMO badge, tooltips,
and importing the engines (torch, sam2) from a worker thread.

Why one module: the three widgets must behave alike. A user mistake (no image, wrong shape, empty references)
becomes a notification whose message says what to do; a bug (``TypeError``, ``KeyError``, ...) is logged with
its traceback and shown as "internal error, please report"; a demo model is flagged in every widget.

Nothing here changes the process for napari or other plugins: no global warnings filters, no edits of the
module table, no collector settings. Warnings are silenced only around the one call that emits them.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import warnings
from importlib import import_module, util
from typing import Any, Callable, Iterable, Iterator

from ..precisions import PRECISIONS
from ._tasks import (USER_ERRORS, BackgroundTask, WidgetError, error_text, guard, is_user_error, notify,
                     notify_error)

__all__ = ["WidgetError", "USER_ERRORS", "is_user_error", "error_text", "notify", "notify_error", "guard",
           "show_model_badge", "set_tooltips", "LAYER_SPACING_MS", "steady_combo", "unique_layer_name",
           "PRECISIONS", "PRECISION_TIP", "import_engines", "describe_models", "start_describe_models",
           "quiet_model_build", "software_opengl_hazard", "ALLOW_TRITON_ENV", "layer_plan", "checked_granularity",
           "checked_precision"]

log = logging.getLogger("napari_granseg.widgets")

#: set to 1 when loading torch's compiler next to software OpenGL is known to work on your machine
ALLOW_TRITON_ENV = "GRANSEG_ALLOW_TRITON"


PRECISION_TIP = ("numeric precision of the model: fp32 computes exactly what the official code computes; bf16 "
                 "is faster on recent CPUs/GPUs and changes masks slightly; auto: bf16 on CUDA, fp32 elsewhere")
# Between two layer additions: napari's add_* of one layer freezes the viewer ~80-300 ms (first layer of a kind:
# lazy imports, shader compilation) and schedules a redraw; a 0 ms timer fired before that redraw, so two adds and
# their draws ran as one freeze. 50 ms lets napari draw and handle input in between.
LAYER_SPACING_MS = 50


def steady_combo(min_chars: int = 4):
    """A QComboBox whose width does not follow its items.

    Why: the model list and the layer lists fill in after the dock is shown (workers, new layers); a combo that
    grows widens the dock and shifts napari's canvas under the person's mouse in the middle of a click or drag.
    """
    from qtpy.QtWidgets import QComboBox

    combo = QComboBox()
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(min_chars)
    return combo


PRECISION_TIP = ("numeric precision of the model: fp32 computes exactly what the official code computes; bf16 "
                 "is faster on recent CPUs/GPUs and changes masks slightly; auto: bf16 on CUDA, fp32 elsewhere")

def show_model_badge(label, model: Any = None, name: str | None = None, demo: bool | None = None,
                     real_model: str = "") -> None:
    """Show on ``label`` (a QLabel) which model a widget uses, in orange with "DEMO" when it is a demo model.

    ``model``: a LoadedModel (its ``name`` and ``is_demo`` are read); or ``name``/``demo`` when the model is
    known by name only (not loaded yet). ``real_model``: the zoo name to suggest instead of a demo.
    """
    name = name or getattr(model, "name", None) or "model"
    demo = bool(getattr(model, "is_demo", False)) if demo is None else demo
    if demo:
        text = f"DEMO model ({name}): trained on synthetic data only."
        if real_model:
            text += f" For real images use '{real_model}' (docs/checkpoints.md)."
        label.setText(text)
        label.setStyleSheet("color: black; background: orange; font-weight: bold; padding: 2px;")
    else:
        label.setText(f"model: {name}")
        label.setStyleSheet("")
    label.setToolTip("the model this widget runs; a DEMO model is a tiny one trained on synthetic images, "
                     "for trying the plugin offline")


def set_tooltips(tips: Iterable[tuple[Any, str]]) -> None:
    """``setToolTip`` on each (widget, text): one place where a widget lists what every control does."""
    for widget, text in tips:
        widget.setToolTip(text)


def software_opengl_hazard() -> bool:
    """True when importing torch's vision part here would crash the whole process.

    Why: with a CUDA build of torch, ``import torchvision`` (sam2 needs it) loads ``triton``; loading
    ``libtriton`` after napari has drawn with Mesa's software OpenGL (llvmpipe: VMs, Xvfb, remote desktops)
    crashes the process (two LLVMs in one process). Loading triton *before* the first OpenGL context is safe,
    which ``python -m napari_granseg`` does. True only when all hold: Linux, triton installed, Mesa's libLLVM
    loaded and libtriton not, and ``GRANSEG_ALLOW_TRITON`` is not 1. Reads the process map; changes nothing.
    """
    if os.environ.get(ALLOW_TRITON_ENV, "") == "1" or not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            maps = fh.read()
    except OSError:  # pragma: no cover - /proc is always there on Linux
        return False
    if "libLLVM" not in maps or "libtriton" in maps:
        return False
    try:
        return util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


SOFTWARE_OPENGL_MESSAGE = (
    "napari draws with software OpenGL (Mesa's llvmpipe: a VM, remote desktop or Xvfb), and loading the model "
    "libraries now would crash napari. Start napari with 'python -m napari_granseg' (it loads them safely "
    "before the window opens), or, if you know your setup works, set GRANSEG_ALLOW_TRITON=1 before starting "
    "napari.")

_ENGINE_MODULES = ("napari_granseg.zoo", "napari_granseg.engine.normalize")
_IMPORT_LOCK = threading.Lock()  # two widgets' first workers may import at once: one at a time


def import_engines(*modules: str) -> None:
    """Import torch, sam2 and the given engine modules; call it in a worker thread, before the first model use.

    Raises :class:`WidgetError` (with what to do) instead of crashing the process on software OpenGL (see
    :func:`software_opengl_hazard`). Warnings the libraries emit while being imported go to the log at debug
    level rather than napari's notifications (caught for the duration of the imports only).
    """
    if software_opengl_hazard():
        raise WidgetError(SOFTWARE_OPENGL_MESSAGE)
    with _IMPORT_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in _ENGINE_MODULES + modules:
            import_module(name)
    for w in caught:
        log.debug("napari-granseg: warning while importing the engines: %s", w.message)


@contextlib.contextmanager
def quiet_model_build() -> Iterator[None]:
    """Around building a predictor or segmenter: hide the ``torch.jit.script`` deprecation sam2 triggers.

    Nothing a user can act on, and napari would pop it up as a notification at every model load; the filter
    lives only for the duration of the build.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
        yield


def describe_models(kind: str) -> tuple[list[str], str, bool]:
    """(zoo names of ``kind`` then the fine-tuned models', the default model's name, whether it is a demo);
    imports the zoo: use in a worker."""
    import_engines()
    from .. import zoo

    names = [s.name for s in zoo.ZOO.values() if s.kind == kind] + zoo.finetuned_models(kind)
    default = zoo.default_model_name(kind)
    spec = zoo.ZOO.get(default)
    return names, default, bool(spec is not None and spec.bundled)


def start_describe_models(kind: str, on_done: Callable[[tuple[list[str], str, bool]], None]) -> BackgroundTask:
    """Run :func:`describe_models` in the background (it imports torch); ``on_done`` on the GUI thread.

    A setup that cannot load the models (software OpenGL) is told to the user; other failures are logged only:
    the widget still works, it just lists fewer models.
    """
    task = BackgroundTask(context="Listing the models")

    def failed(exc: BaseException) -> None:
        if isinstance(exc, WidgetError):
            notify_error(exc, "Listing the models")
        else:
            log.warning("napari-granseg: could not list the models: %s", exc)

    def job(_is_cancelled):
        return describe_models(kind)

    task.start(job, on_done=on_done, on_error=failed)
    return task


def layer_plan(layer, channels_text: str = "", scale: str = "auto", tile: int | None = None):
    """The :class:`~napari_granseg.engine.source.ImagePlan` of an image layer (its shape only: nothing is read).

    The rules (level 0, the channel rule, tile or downscale) are the plan's; this only says the fix in the
    widget's words: a multi-channel image without a choice asks for the "channels" box.
    """
    from ..engine.source import ImagePlan, needs_channel_choice

    shape, rgb = tuple(layer.data[0].shape if layer.multiscale else layer.data.shape), bool(layer.rgb)
    if not channels_text.strip() and needs_channel_choice(shape, rgb):
        raise WidgetError(f"layer {layer.name!r} of shape {shape} looks like a {shape[-1]}-channel image: type "
                          f"the channel(s) the model should see in 'channels' (e.g. 1, or 0, 2 for a composite)")
    return ImagePlan.from_array(layer.data, rgb=rgb, channels=channels_text, name=f"layer {layer.name!r}",
                                multiscale=bool(layer.multiscale), scale=scale, tile=tile)


def checked_granularity(value: Any) -> float:
    """One granularity, checked by the API's rule (``engine.prompts.one_granularity``): a WidgetError naming
    the value for a word, a list, NaN or a value outside [0.1, 1] (never clipped: a script that asks for 5
    is told, not given 1)."""
    from ..engine.prompts import one_granularity

    try:
        return one_granularity(value, lists="a list of levels is Segment everything's")
    except ValueError as err:
        raise WidgetError(str(err)) from None


def checked_precision(precision: Any) -> str:
    """``precision`` by the engines' rule (:func:`napari_granseg.precisions.check_precision`), as a WidgetError."""
    from ..precisions import check_precision

    try:
        return check_precision(precision)
    except ValueError as err:
        raise WidgetError(str(err)) from None


def unique_layer_name(viewer, name: str) -> str:
    """``name``, or ``name [2]``, ``name [3]``... so that no existing layer is replaced or renamed."""
    taken = {layer.name for layer in viewer.layers}
    if name not in taken:
        return name
    k = 2
    while f"{name} [{k}]" in taken:
        k += 1
    return f"{name} [{k}]"

"""What every dock widget of the plugin shares: user errors vs bugs, notifications, the DEMO badge, tooltips,
and importing the engines (torch, sam2) safely from a worker thread.

Why one module: the three widgets must behave alike. A user mistake (no image, wrong shape, empty references)
becomes a notification whose message says what to do; a bug (``TypeError``, ``KeyError``, ...) is logged with
its traceback and shown as "internal error, please report"; a demo model is flagged in every widget.

This module imports no torch, sam2 or engine at import time, so that napari's plugin discovery and opening a
widget stay fast; the engines are imported by :func:`import_engines`, called inside the first worker.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from importlib import import_module
from typing import Any, Callable, Iterable

from ._quiet_import import collector_paused, preload_torch_libraries

__all__ = ["WidgetError", "USER_ERRORS", "is_user_error", "notify", "notify_error", "guard", "show_model_badge",
           "set_tooltips", "LAYER_SPACING_MS", "steady_combo", "unique_layer_name", "PRECISIONS", "PRECISION_TIP",
           "import_engines", "describe_models", "start_describe_models", "avoid_triton_llvm_crash",
           "ALLOW_TRITON_ENV"]

log = logging.getLogger("napari_granseg.widgets")

#: set to 1 to never mark triton absent (see :func:`avoid_triton_llvm_crash`)
ALLOW_TRITON_ENV = "GRANSEG_ALLOW_TRITON"


class WidgetError(ValueError):
    """A user mistake in a widget (no image, wrong view, ...); the message says what to do."""


#: exception types that are user mistakes whatever module raised them (their message says what to do)
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)

# user-facing errors of modules that import torch: recognised only once their module is loaded (an error of
# such a type can only have been raised after its module was imported, so nothing heavy is imported here)
PRECISIONS = ("auto", "fp32", "bf16")
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

_LAZY_USER_ERRORS = (("napari_granseg.checkpoints", "CheckpointError"),
                     ("napari_granseg.zoo", "ModelDownloadError"),
                     ("napari_granseg.engine.propagate", "PropagationCancelled"))


def is_user_error(exc: BaseException) -> bool:
    """True for a user mistake (shown as it is); False for a bug (TypeError, KeyError, ... get a traceback)."""
    if isinstance(exc, USER_ERRORS):
        return True
    for module_name, cls_name in _LAZY_USER_ERRORS:
        cls = getattr(sys.modules.get(module_name), cls_name, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
    return False


def notify(level: str, message: str) -> None:
    """Show a napari notification: ``level`` is "error", "warning" or "info"."""
    from napari.utils import notifications

    {"error": notifications.show_error, "warning": notifications.show_warning,
     "info": notifications.show_info}[level](message)


def notify_error(exc: BaseException, context: str = "") -> str:
    """Show ``exc`` as an error notification and return the text shown.

    A user mistake shows its message; anything else is a bug: its traceback goes to the log and the user reads
    "internal error, please report" with the exception, never a silent failure and never a traceback dialog.
    """
    prefix = f"{context}: " if context else ""
    if is_user_error(exc):
        text = f"{prefix}{exc}"
    else:
        log.error("napari-granseg: %s failed", context or "a background task", exc_info=exc)
        text = (f"{prefix}internal error, please report it (with the log): {type(exc).__name__}: {exc}")
    notify("error", text)
    return text


def guard(fn: Callable[[], Any], context: str = "", on_error: Callable[[str], None] | None = None) -> Any:
    """Run a GUI action; an exception becomes a notification (see :func:`notify_error`). Returns fn's value or None.

    ``on_error(text)`` also receives the text shown (widgets keep it for their status line and tests).
    """
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - shown to the user, bugs logged with traceback
        text = notify_error(exc, context)
        if on_error is not None:
            on_error(text)
        return None


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


def avoid_triton_llvm_crash() -> bool:
    """Mark triton absent when loading it would crash the process; True if it acted (logged).

    Why: with a CUDA build of torch, ``import torchvision`` (which sam2's predictor needs) imports
    ``torch._dynamo``, which imports ``triton``; loading ``libtriton.so`` after napari has created an OpenGL
    context on Mesa's software renderer (llvmpipe: VMs, Xvfb, remote desktops) crashes the process with a
    segmentation fault (two LLVMs in one process; seen with napari 0.9.2, Mesa libLLVM-15, torch 2.14.1+cu130).
    Acts only when all hold: Linux, Mesa's libLLVM already mapped into the process, triton and torchvision not
    imported yet, and ``GRANSEG_ALLOW_TRITON`` is not set to 1. It then sets ``sys.modules['triton'] = None``:
    torch treats triton as not installed, which disables only ``torch.compile`` GPU kernels (unused here).
    """
    if os.environ.get(ALLOW_TRITON_ENV, "") == "1":
        return False
    if not sys.platform.startswith("linux") or "triton" in sys.modules or "torchvision" in sys.modules:
        return False
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            maps = fh.read()
    except OSError:  # pragma: no cover - /proc is always there on Linux
        return False
    if "libLLVM" not in maps:
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]
    log.info("napari-granseg: software OpenGL (Mesa libLLVM) is loaded; triton marked absent to avoid a crash "
             "(set %s=1 to disable this)", ALLOW_TRITON_ENV)
    return True


_ENGINE_MODULES = ("napari_granseg.zoo", "napari_granseg.engine.normalize")
_IMPORT_LOCK = threading.Lock()  # two widgets' first workers may import at once: one at a time, no races


def import_engines(*modules: str) -> None:
    """Import torch, sam2 and the given engine modules; call it in a worker thread, before the first model use.

    Applies :func:`avoid_triton_llvm_crash` first, and keeps the warnings dependencies emit while importing
    (deprecations of torch, sam2, ...) out of napari's notifications: they go to the log at debug level; the
    ``torch.jit.script`` deprecation sam2 triggers when it builds a model is ignored from then on.
    """
    # sam2 builds its models with torch.jit.script, deprecated by torch: nothing a user can act on, and napari
    # would pop it up as a notification at every first model load
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
    with _IMPORT_LOCK:
        if all(name in sys.modules for name in _ENGINE_MODULES + modules):
            return
        avoid_triton_llvm_crash()
        with warnings.catch_warnings(record=True) as caught, collector_paused():
            warnings.simplefilter("always")
            preload_torch_libraries()  # so that the import does not hold the GUI thread (see _quiet_import)
            for name in _ENGINE_MODULES + modules:
                import_module(name)
    for w in caught:
        log.debug("napari-granseg: warning while importing the engines: %s", w.message)


def describe_models(kind: str) -> tuple[list[str], str, bool]:
    """(zoo names of ``kind`` then the fine-tuned models', the default model's name, whether it is a demo);
    imports the zoo: use in a worker."""
    import_engines()
    from .. import zoo

    names = [s.name for s in zoo.ZOO.values() if s.kind == kind] + zoo.finetuned_models(kind)
    default = zoo.default_model_name(kind)
    spec = zoo.ZOO.get(default)
    return names, default, bool(spec is not None and spec.bundled)


def start_describe_models(kind: str, on_done: Callable[[tuple[list[str], str, bool]], None]):
    """Run :func:`describe_models` in a thread worker (imports torch off the GUI thread); ``on_done`` on the GUI
    thread. Failures are logged only: the widget still works, it just lists fewer models."""
    from napari.qt.threading import create_worker

    worker = create_worker(describe_models, kind, _start_thread=False)

    def done(value):
        try:
            on_done(value)
        except RuntimeError as err:  # the widget was closed meanwhile
            if "has been deleted" not in str(err):
                raise

    worker.returned.connect(done)
    worker.errored.connect(lambda exc: log.warning("napari-granseg: could not list the models: %s", exc))
    worker.start()
    return worker


def unique_layer_name(viewer, name: str) -> str:
    """``name``, or ``name [2]``, ``name [3]``... so that no existing layer is replaced or renamed."""
    taken = {layer.name for layer in viewer.layers}
    if name not in taken:
        return name
    k = 2
    while f"{name} [{k}]" in taken:
        k += 1
    return f"{name} [{k}]"

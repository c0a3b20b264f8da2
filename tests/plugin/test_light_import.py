"""Importing the plugin and its widget modules imports neither torch nor sam2 nor the engines (napari's plugin
discovery and opening a widget stay fast; the engines load in the widgets' first worker)."""
from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["torch", "sam2", "torchvision", "triton", "napari_granseg.engine.automatic",
         "napari_granseg.engine.fewshot", "napari_granseg.engine.interactive", "napari_granseg.zoo"]


def test_plugin_and_widget_imports_are_light():
    code = ("import sys, json\n"
            "import napari_granseg, napari_granseg.widgets, napari_granseg.widgets._tasks\n"
            "import napari_granseg.widgets.everything, napari_granseg.widgets.fewshot\n"
            "import napari_granseg.sample_data\n"
            f"print(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert not any(loaded.values()), loaded
    # and triton is never marked absent at import time (only by import_engines, when it would crash)
    code2 = "import sys, napari_granseg.widgets.everything; print('triton' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code2], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_triton_guard_is_opt_out_and_scoped(monkeypatch):
    from napari_granseg.widgets import _common

    monkeypatch.setenv(_common.ALLOW_TRITON_ENV, "1")
    assert _common.avoid_triton_llvm_crash() is False
    monkeypatch.delenv(_common.ALLOW_TRITON_ENV)
    if "torchvision" in sys.modules or "triton" in sys.modules:
        assert _common.avoid_triton_llvm_crash() is False  # too late to matter: never acts
    code = ("import sys\nfrom napari_granseg.widgets._common import avoid_triton_llvm_crash\n"
            "print(avoid_triton_llvm_crash(), 'triton' in sys.modules)")
    # a process without Mesa's libLLVM loaded (no OpenGL context): nothing to guard against
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_user_errors_and_bugs_are_told_apart():
    from napari_granseg.widgets._common import WidgetError, is_user_error

    assert is_user_error(WidgetError("no image")) and is_user_error(ValueError("x"))
    assert not is_user_error(TypeError("bug")) and not is_user_error(KeyError("bug"))

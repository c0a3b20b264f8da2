"""Importing the plugin and its widget modules imports neither torch nor sam2 nor the engines (napari's plugin
discovery and opening a widget stay fast; the engines load in the widgets' first worker)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

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


def test_the_plugin_changes_nothing_process_wide_and_asks_for_the_launcher_on_software_opengl(monkeypatch):
    """Importing the engines from a widget leaves the collector, the module table and the warnings filters
    as they were; where loading them would crash (software OpenGL), the user reads what to do instead."""
    code = ("import gc, sys, warnings\n"
            "filters = list(warnings.filters)\n"
            "from napari_granseg.widgets._common import import_engines, software_opengl_hazard\n"
            "assert not software_opengl_hazard()  # no OpenGL in this process: nothing to fear\n"
            "import_engines('napari_granseg.engine.automatic')\n"
            "from napari_granseg.widgets.interactive.model import build_now\n"
            "import napari_granseg as gs\n"
            "build_now(gs.load_model('unsamv2-demo', device='cpu'), 'auto', 1)  # the interactive widget's build\n"
            "assert gc.isenabled() and gc.get_freeze_count() == 0\n"
            "assert warnings.filters == filters, 'warnings filters changed'\n"
            "print(sys.modules.get('triton', 'absent') is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "True"  # triton is never marked absent for other plugins

    from napari_granseg.widgets import _common

    maps = "7f00 r-xp /usr/lib/x86_64-linux-gnu/libLLVM-15.so.1\n"
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr("builtins.open", lambda *a, **k: __import__("io").StringIO(maps))
    monkeypatch.setattr(_common.util, "find_spec", lambda name: object())
    monkeypatch.delenv(_common.ALLOW_TRITON_ENV, raising=False)
    assert _common.software_opengl_hazard()
    with pytest.raises(_common.WidgetError, match="python -m napari_granseg"):
        _common.import_engines()
    monkeypatch.setenv(_common.ALLOW_TRITON_ENV, "1")  # the user knows the setup works
    assert not _common.software_opengl_hazard()


def test_user_errors_and_bugs_are_told_apart():
    from napari_granseg.widgets._common import WidgetError, is_user_error

    assert is_user_error(WidgetError("no image")) and is_user_error(ValueError("x"))
    assert not is_user_error(TypeError("bug")) and not is_user_error(KeyError("bug"))

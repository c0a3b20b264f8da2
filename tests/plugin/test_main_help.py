"""``python -m napari_granseg --help`` speaks of what the user does; the launcher loads torch's GPU compiler
before any OpenGL context (the safe order on software OpenGL) and never when it is already too late."""
from __future__ import annotations

import subprocess
import sys


def test_help_says_what_the_user_does():
    out = subprocess.run([sys.executable, "-m", "napari_granseg", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--headless" in out and "--check" in out and "software" in out
    for code_talk in (".py", "interpreter", "earlier version", "widgets/", "GIL"):
        assert code_talk not in out, code_talk


def test_launcher_loads_triton_first_and_not_after_software_opengl(monkeypatch):
    code = ("import importlib.util, sys\n"
            "from napari_granseg.__main__ import load_before_opengl\n"
            "has = importlib.util.find_spec('triton') is not None\n"
            "print(has, load_before_opengl(), 'torch' in sys.modules)")
    has, loaded, torch_loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                               check=True).stdout.split()
    assert loaded == has and torch_loaded == "False"  # cheap: triton alone, not torch

    from napari_granseg import __main__ as launcher

    monkeypatch.setattr(launcher, "_process_map", lambda: "7f00 r-xp /usr/lib/libLLVM-15.so.1\n")
    if sys.platform.startswith("linux"):
        assert launcher.load_before_opengl() is False  # OpenGL already draws in software: too late

"""Committed labels survive napari dying: a person's path, in two processes.

The first process opens a 16-bit TIFF (File > Open), the interactive widget from the plugin, clicks a cell
on the canvas, presses Commit and is killed with ``os._exit`` (no normal end). A NEW process opens the same
file and the widget: the dock offers "Restore ...", one click brings back a "granseg labels" layer whose
pixels are exactly the committed ones, and the dock says what came back and from when.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

pytestmark = pytest.mark.gui

SCRIPT = Path(__file__).with_name("crash_session.py")


def _run(args, env) -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], env=env, capture_output=True, text=True,
                         timeout=540)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]


def test_a_commit_survives_a_crash_and_is_restored_in_a_new_napari(tmp_path):
    import tifffile

    from napari_granseg.synthetic import nested_cells_scene

    scene = nested_cells_scene(size=128, n_cells=2, seed=10_001)
    image = tmp_path / "cells.tif"
    tifffile.imwrite(image, scene.image)
    env = dict(os.environ, GRANSEG_RECOVERY_DIR=str(tmp_path / "recovery"), GRANSEG_OFFLINE="1",
               GRANSEG_CACHE_DIR=str(tmp_path / "models"), PYTHONPATH=os.pathsep.join(sys.path))
    row, col = scene.centers[0]
    _run(["commit", image, tmp_path, row, col], env)
    committed = np.load(tmp_path / "committed.npy")
    cell = scene.masks[2][0]
    assert committed.max() == 1 and (committed[cell] == 1).mean() > 0.5  # the clicked cell was committed
    _run(["restore", image, tmp_path], env)
    restored = np.load(tmp_path / "restored.npy")
    np.testing.assert_array_equal(restored, committed)
    said = json.loads((tmp_path / "restored.json").read_text())
    assert said["button"].startswith("Restore 'granseg labels' from ")
    assert "restored 'granseg labels' over 'cells'" in said["message"] and "interactive commit" in said["message"]
    assert said["status"].startswith("restored 'granseg labels'")  # the widget's status line says it too
    assert not said["visible_after"]  # nothing left to offer
    assert said["layers"].count("granseg labels") == 1

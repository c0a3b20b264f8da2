"""The README's first command, ``python -m napari_granseg``: napari opens with the sample and the interactive widget.

Run in-process with ``--check`` (the same window, without entering the event loop), under the test's Xvfb.
"""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_readme_command_opens_the_sample_and_the_interactive_widget(qtbot, capsys, tmp_path):
    from napari_granseg.__main__ import main

    shot = tmp_path / "window.png"
    viewer = main(["--check", "--screenshot", str(shot)])
    try:
        assert viewer.layers[0].name == "nested cells" and viewer.layers[0].data.dtype == np.uint16
        docks = list(viewer.window.dock_widgets)
        assert any(name.startswith("Interactive (UnSAMv2)") for name in docks), docks
        out = capsys.readouterr().out
        assert "nested cells" in out and "Interactive (UnSAMv2)" in out
        # the widget loaded the default model (the bundled demo offline) in its worker; the command waited for it
        assert "model: LoadedModel(unsamv2:" in out
        widget = next(w for name, w in viewer.window.dock_widgets.items() if name.startswith("Interactive"))
        assert widget.predictor is not None and not widget.busy
        # the prompts layer is selected in add mode: the person's first click is a prompt, not a pan
        assert viewer.layers.selection.active.name == "granseg prompts"
        assert viewer.layers.selection.active.mode == "add"
        from imageio.v3 import imread

        img = imread(shot)
        assert img.ndim == 3 and img.shape[0] > 200 and img[..., :3].std() > 5  # a drawn window, not blank
    finally:
        viewer.close()

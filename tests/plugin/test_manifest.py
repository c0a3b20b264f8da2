"""The npe2 manifest: ships in the installed package, validates with imports, every contribution works."""
from __future__ import annotations

import importlib.resources as resources
import subprocess
import sys

import numpy as np
import pytest
import yaml

WIDGETS = ["Interactive (UnSAMv2)", "Segment everything (UnSAMv2)", "Few-shot series (SANSA)", "Fine-tune (UnSAMv2)"]


def test_manifest_is_inside_the_installed_package():
    text = (resources.files("napari_granseg") / "napari.yaml").read_text()
    data = yaml.safe_load(text)
    assert data["name"] == "napari-granseg"
    assert {w["display_name"] for w in data["contributions"]["widgets"]} == set(WIDGETS)


def test_npe2_validate_with_imports():
    out = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-granseg", "--imports"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in (out.stdout + out.stderr).lower()


def test_sample_data_contributions_are_real_arrays():
    from napari_granseg import sample_data

    (img, meta, kind), = sample_data.nested_cells_sample()
    assert kind == "image" and img.dtype == np.uint16 and img.ndim == 2 and img.max() > img.min()
    (stack, _, _), = sample_data.cell_stack_sample()
    assert stack.ndim == 3 and stack.shape[0] == 12
    (series, _, _), (refs, _, kind2) = sample_data.shapes_series_sample()
    assert kind2 == "labels" and refs[:2].max() == 2 and refs[2:].max() == 0
    (cell, _, _), = sample_data.skimage_cell_sample()
    assert cell.ndim == 2


@pytest.mark.parametrize("widget_name", WIDGETS)
def test_each_widget_opens_in_a_viewer(make_napari_viewer, widget_name):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-granseg", "nested_cells")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-granseg", widget_name)
    assert widget is not None and dock is not None
    assert viewer.layers[0].name == "nested cells"  # the user's layer is untouched
    assert viewer.layers[0].data.dtype == np.uint16


def test_sample_opens_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-granseg", "shapes_series")
    assert [layer.name for layer in viewer.layers] == ["shapes series", "reference labels"]

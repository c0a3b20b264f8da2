"""The Plugins menu: one submenu named as in the docs, one action per widget, each opening its widget."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # person_path.py: the helpers shared by these tests
from person_path import MENU_TITLE, menu_action, open_widget

pytestmark = pytest.mark.gui

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _widget_classes():
    from napari_granseg.widgets.everything import EverythingWidget
    from napari_granseg.widgets.fewshot import FewShotWidget
    from napari_granseg.widgets.finetune import FinetuneWidget
    from napari_granseg.widgets.interactive import InteractiveWidget

    return {"Interactive (UnSAMv2)": InteractiveWidget, "Segment everything (UnSAMv2)": EverythingWidget,
            "Few-shot series (SANSA)": FewShotWidget, "Fine-tune (UnSAMv2)": FinetuneWidget}


def test_docs_name_the_menu_entries_as_the_manifest_does():
    import yaml

    manifest = yaml.safe_load((Path(__file__).resolve().parents[2] / "src/napari_granseg/napari.yaml").read_text())
    assert manifest["display_name"] == MENU_TITLE
    names = {w["display_name"] for w in manifest["contributions"]["widgets"]}
    assert names == set(_widget_classes())
    text = " ".join((DOCS / "widgets.md").read_text().split())  # one line: paths may wrap
    paths = re.findall(r"\*Plugins > ([^>*]+?) > ([^*]+?)\*", text)
    assert paths, "the docs should say where the widgets are in the Plugins menu"
    for submenu, entry in paths:
        assert submenu.strip() == MENU_TITLE, (submenu, entry)
        assert entry.strip() in names, entry
    assert {entry.strip() for _, entry in paths} == names


@pytest.mark.parametrize("name", ["Interactive (UnSAMv2)", "Segment everything (UnSAMv2)", "Few-shot series (SANSA)",
                                  "Fine-tune (UnSAMv2)"])
def test_each_menu_action_opens_its_widget(make_napari_viewer, name):
    viewer = make_napari_viewer()
    assert menu_action(viewer, name) is not None
    widget = open_widget(viewer, name, "menu", _widget_classes()[name])
    assert widget.isVisible() or widget.parent() is not None

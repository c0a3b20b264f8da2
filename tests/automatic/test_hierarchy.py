"""Parts-to-wholes links between label images at several granularities (hand-made labels)."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_granseg.engine.hierarchy import build_hierarchy, link_levels


def _levels():
    cells = np.zeros((40, 60), np.int32)
    cells[2:38, 2:28] = 1
    cells[2:38, 32:58] = 2
    nuclei = np.zeros_like(cells)
    nuclei[10:30, 8:22] = 5          # in cell 1
    nuclei[10:30, 38:52] = 7         # in cell 2
    nuclei[0:10, 26:34] = 9          # straddles both cells and background: no majority parent
    nucleoli = np.zeros_like(cells)
    nucleoli[15:19, 12:16] = 3       # in nucleus 5
    nucleoli[20:24, 42:46] = 1       # in nucleus 7
    nucleoli[33:36, 10:13] = 2       # in cell 1 but in no nucleus
    return {1.0: cells, 0.5: nuclei, 0.1: nucleoli}


def test_links_each_part_to_its_whole():
    h = build_hierarchy(_levels())
    assert h.granularities == [0.1, 0.5, 1.0]
    assert h.parent(0.1, 3) == (0.5, 5) and h.parent(0.1, 1) == (0.5, 7)
    assert h.parent(0.1, 2) == (None, 0)          # no nucleus contains it
    assert h.parent(0.5, 5) == (1.0, 1) and h.parent(0.5, 7) == (1.0, 2)
    assert h.parent(0.5, 9) == (None, 0)          # at most 32 % inside one cell
    assert h.parent(1.0, 1) == (None, 0)
    assert h.chain(0.1, 3) == [(0.1, 3), (0.5, 5), (1.0, 1)]
    assert h.children(0.5, 7) == {0.1: [1]}


def test_containment_threshold_and_shape_check():
    child = np.zeros((10, 10), np.int32)
    child[0:10, 0:4] = 1
    parent = np.zeros_like(child)
    parent[0:10, 0:2] = 4  # 50 % inside
    assert link_levels(child, parent, 0.5) == {1: (4, 0.5)}
    assert link_levels(child, parent, 0.6) == {1: (0, 0.5)}
    with pytest.raises(ValueError, match="same image"):
        link_levels(child, parent[:5])


def test_table_features_and_export(tmp_path):
    h = build_hierarchy(_levels())
    rows = {(r["level"], r["id"]): r for r in h.to_table()}
    assert len(rows) == 8
    r = rows[(0.1, 3)]
    assert (r["parent_level"], r["parent_id"], r["area"]) == (0.5, 5, 16)
    assert (r["centroid_row"], r["centroid_col"]) == (16.5, 13.5)
    feats = h.features(0.5)
    assert list(feats["index"]) == [5, 7, 9] and list(feats["parent_id"]) == [1, 2, 0]
    paths = h.export(tmp_path)
    import tifffile

    names = sorted(p.name for p in paths)
    assert names == ["everything_g0.1.tif", "everything_g0.5.tif", "everything_g1.tif", "everything_hierarchy.csv"]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "everything_g0.5.tif"), _levels()[0.5])
    with open(tmp_path / "everything_hierarchy.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 8 and table[0]["level"] == "0.1"
    assert {(t["id"], t["parent_id"]) for t in table if t["level"] == "0.1"} == {("1", "7"), ("2", "0"), ("3", "5")}
    assert not list(tmp_path.glob(".*part"))

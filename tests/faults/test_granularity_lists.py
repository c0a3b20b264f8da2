"""A list of granularities means the same everywhere: in ``gs.segment_everything`` the hierarchy's levels (as
the everything widget builds them); where one run takes one value (the engine, the CLI) a list is refused by
name, never a TypeError from deep inside."""
from __future__ import annotations

import numpy as np
import pytest

import napari_granseg as gs
from napari_granseg.cli import main
from napari_granseg.engine.automatic import segment_everything as engine_everything
from napari_granseg.engine.hierarchy import Hierarchy
from napari_granseg.synthetic import nested_cells_scene


@pytest.fixture(scope="module")
def demo():
    return gs.load_model("unsamv2-demo", device="cpu")


@pytest.fixture(scope="module")
def image():
    return nested_cells_scene(size=128, n_cells=2, seed=5).image


def test_a_list_gives_the_hierarchy_of_those_levels(demo, image):
    h = gs.segment_everything(image, granularity=[1.0, 0.3], model=demo, points_per_side=8)
    assert isinstance(h, Hierarchy) and h.granularities == [0.3, 1.0]  # finest first, as the widget's
    for g in (0.3, 1.0):
        assert np.array_equal(h.levels[g], gs.segment_everything(image, granularity=g, model=demo, points_per_side=8))
    parts, wholes = h.levels[0.3], h.levels[1.0]
    assert parts.max() >= 1 and wholes.max() >= 1
    linked = [i for i in np.unique(parts)[1:] if h.parent(0.3, int(i))[1]]
    assert linked, "no part was linked to a whole"
    for i in linked:  # a part's parent is the whole covering most of it
        _, pid = h.parent(0.3, int(i))
        covered = wholes[parts == i]
        assert np.bincount(covered).argmax() == pid


@pytest.mark.parametrize("bad, expected", [([], "is empty"), ([0.3, 5.0], r"granularity"), (["a"], "not a number")])
def test_bad_lists_are_refused_by_name(demo, image, bad, expected):
    with pytest.raises(ValueError, match=expected):
        gs.segment_everything(image, granularity=bad, model=demo, points_per_side=4)


def test_the_engine_and_return_info_take_one_value_and_say_so(demo, image):
    pred = gs.get_predictor(demo)
    with pytest.raises(ValueError, match=r"granularity=\[0.3, 1.0\].*gs.segment_everything"):
        engine_everything(pred, image, granularity=[0.3, 1.0])
    with pytest.raises(ValueError, match="return_info=True needs one granularity"):
        gs.segment_everything(image, granularity=[0.3, 1.0], model=demo, return_info=True)


@pytest.mark.parametrize("value, expected", [("0.3,1.0", "holds 2 values"), ("abc", "not a number"),
                                             ("nan", r"outside \[0.1, 1\]"), ("5", r"outside \[0.1, 1\]")])
def test_the_cli_refuses_several_or_bad_values_naming_the_flag(tmp_path, capsys, value, expected):
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(tmp_path), "--granularity", value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--granularity" in err and expected.replace("\\", "") in err.replace("\\", "")
    assert not any(tmp_path.iterdir())

"""EverythingWidget: a run adds NEW Labels layers (one per g, parent ids as features) and touches nothing else."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_granseg.widgets._common import import_engines

import_engines("napari_granseg.engine.automatic")  # the widget's own import path (triton guard included)
from napari_granseg.zoo import load_model  # noqa: E402

pytestmark = pytest.mark.gui


def test_run_adds_new_layers_and_exports(make_napari_viewer, qtbot, tmp_path):
    from napari_granseg.widgets.everything import EverythingWidget, parse_granularities

    torch.manual_seed(0)
    model = load_model(None, kind="unsamv2", config="granseg_tiny.yaml", device="cpu")
    viewer = make_napari_viewer()
    image = np.random.default_rng(0).integers(0, 4000, (48, 48)).astype(np.uint16)
    viewer.add_image(image, name="cells")
    mine = np.zeros((48, 48), np.int32)
    mine[5:9, 5:9] = 3
    user_layer = viewer.add_labels(mine.copy(), name="everything g=0.3")  # same name as an output
    w = EverythingWidget(viewer, model=model)
    assert w.image_combo.currentText() == "cells"
    w.points.setValue(3)
    w.granularity.setText("0.8, 0.3")
    assert not w.export_button.isEnabled()  # nothing to export before a run
    worker = w.run()
    assert worker is not None
    qtbot.waitUntil(lambda: not w.busy, timeout=120_000)
    assert w.export_button.isEnabled() and w.run_button.isEnabled()
    names = [layer.name for layer in viewer.layers]
    assert names == ["cells", "everything g=0.3", "everything g=0.3 [2]", "everything g=0.8"]
    assert viewer.layers["everything g=0.3"] is user_layer
    np.testing.assert_array_equal(user_layer.data, mine)
    fine = viewer.layers["everything g=0.3 [2]"]
    assert fine.data.shape == (48, 48) and "parent_id" in fine.features.columns
    assert list(fine.features["index"]) == list(range(1, int(fine.data.max()) + 1))
    paths = w.export(tmp_path)
    assert sorted(p.name for p in paths) == ["everything_g0.3.tif", "everything_g0.8.tif",
                                             "everything_hierarchy.csv"]
    assert parse_granularities("1, 0.1,0.5") == [0.1, 0.5, 1.0]
    with pytest.raises(ValueError, match="outside"):
        parse_granularities("0.05")


def test_min_stability_overrides_the_default_only_when_set(make_napari_viewer):
    """What a run asks for (the widget's overrides) resolved as the engine resolves them, here and on a worker."""
    from napari_granseg.engine.automatic.settings import resolve_settings
    from napari_granseg.widgets._everything_job import overrides_for
    from napari_granseg.widgets.everything import EverythingWidget

    def settings_for(predictor, g, points, stability):
        return resolve_settings(predictor, g, None, overrides_for(points, stability))

    w = EverythingWidget(make_napari_viewer())
    assert w.stability.value() == 0.0 and w.stability.text() == "auto (per g)"
    plain = SimpleNamespace(device="cpu", loaded=None)
    assert settings_for(plain, 1.0, 8, 0.0).stability_score_thresh == 0.7  # UnSAMv2's default
    assert settings_for(plain, 1.0, 8, 0.9).stability_score_thresh == 0.9
    assert settings_for(plain, None, 8, 0.0).stability_score_thresh == 0.95  # stock SAM 2's
    # a model that recommends its own settings (the demo's record): "auto" means those, a set value still wins
    demo_like = SimpleNamespace(device="cpu", loaded=SimpleNamespace(
        automatic_defaults={"stability_score_thresh": 0.9, "use_m2m": False}))
    auto = settings_for(demo_like, 1.0, 8, 0.0)
    assert (auto.stability_score_thresh, auto.use_m2m, auto.points_per_side) == (0.9, False, 8)
    assert settings_for(demo_like, 1.0, 8, 0.75).stability_score_thresh == 0.75

"""The "Segment everything" session without Qt or napari: a synchronous runner, the request a person's Run would
build, and the labels, hierarchy, progress, cancel and error messages the widget then shows."""
from __future__ import annotations

import numpy as np
import pytest

from napari_granseg.widgets._everything_job import EverythingRequest, ModelShown
from napari_granseg.widgets._everything_session import EverythingSession
from napari_granseg.engine.source import ImagePlan
from napari_granseg.widgets._tasks import SyncRunner


def _best_iou(labels: np.ndarray, truth: np.ndarray) -> float:
    ids = [i for i in np.unique(labels[truth]) if i]
    return max((float(((labels == i) & truth).sum() / ((labels == i) | truth).sum()) for i in ids), default=0.0)


def _request(image, name="cells", **kw) -> EverythingRequest:
    plan = ImagePlan.from_array(image, name=name)
    source = ((1.0,) * len(plan.labels_shape), (0.0,) * len(plan.labels_shape))
    return EverythingRequest(plan=plan, layer_name=name, source=source, **kw)


def _run(request, where=None, runner=None):
    session = EverythingSession(runner or SyncRunner())
    seen = {"finished": [], "model": [], "failed": []}
    session.finished.connect(seen["finished"].append)
    session.model_shown_changed.connect(seen["model"].append)
    session.failed.connect(seen["failed"].append)
    session.run(request, where=where)
    return session, seen


def test_levels_hierarchy_and_one_progress_bar(demo_unsamv2):
    import napari_granseg as gs
    from napari_granseg.sample_data import nested_cells_sample_scene

    scene = nested_cells_sample_scene()
    runner = SyncRunner()
    session, seen = _run(_request(scene.image, granularities=(0.1, 1.0), model=demo_unsamv2, precision="fp32",
                                  points=8), runner=runner)
    assert session.last_error == "" and seen["failed"] == []
    assert seen["model"] == [ModelShown(demo_unsamv2.name, True, demo_unsamv2)]
    specs = seen["finished"][0]
    assert [s["name"] for s in specs["layers"]] == ["everything g=0.1", "everything g=1"]
    whole = next(s for s in specs["layers"] if s["key"] == 1.0)["data"]
    assert min(_best_iou(whole, cell) for cell in scene.masks[2]) > 0.5
    # exactly the API's call with the same settings (the widget adds no logic of its own)
    want = gs.segment_everything(scene.image, 1.0, model=demo_unsamv2, precision="fp32", points_per_side=8)
    np.testing.assert_array_equal(whole, want)
    fine = next(s for s in specs["layers"] if s["key"] == 0.1)
    assert {"parent_id", "predicted_iou", "stability_score"} <= set(fine["features"].columns)
    assert session.hierarchy is specs["hierarchy"]
    totals = {p.total for p in runner.progress if p.total > 0}
    assert len(totals) == 1  # one bar over both levels
    done = [p.done for p in runner.progress if p.total > 0]
    assert done == sorted(done) and done[-1] == totals.pop()


def test_a_stack_gets_ids_unique_across_slices_and_cancel_keeps_nothing(demo_unsamv2):
    from napari_granseg.synthetic import nested_cells_scene

    scenes = [nested_cells_scene(size=96, n_cells=2, seed=s) for s in range(2)]
    stack = np.stack([s.image for s in scenes])
    request = _request(stack, "stack", granularities=(1.0,), model=demo_unsamv2, points=6)
    session, seen = _run(request)
    labels = seen["finished"][0]["layers"][0]["data"]
    assert labels.shape == (2, 96, 96)
    ids = [set(np.unique(labels[z])) - {0} for z in range(2)]
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    for z, scene in enumerate(scenes):
        assert min(_best_iou(labels[z], cell) for cell in scene.masks[2]) > 0.5

    session, seen = _run(request, runner=SyncRunner(cancel_after=3))  # Cancel pressed during the first slice
    assert seen["finished"] == [] and session.result is None and session.last_error == ""


def test_mistakes_are_messages_that_say_what_to_do(demo_unsamv2, no_cached_models):
    from napari_granseg.widgets._everything_session import parse_granularities
    from napari_granseg.widgets._tasks import WidgetError

    with pytest.raises(WidgetError, match="outside"):
        parse_granularities("0.05")
    image = np.zeros((64, 64), np.uint16)
    session, seen = _run(_request(image, granularities=(0.5,), model="no-such-model", points=4))
    assert seen["finished"] == [] and seen["failed"] == [session.last_error]
    assert session.last_error.startswith("Segment everything: ") and "no-such-model" in session.last_error
    assert "internal error" not in session.last_error
    with pytest.raises(WidgetError, match="nothing to export"):
        session.export("unused")

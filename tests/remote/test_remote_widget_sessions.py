"""The everything and few-shot sessions (no Qt) run here and on the LocalCluster's worker through the same job
body: the labels are identical (fp32 on both sides, one torch thread like the worker)."""
from __future__ import annotations

import numpy as np
import pytest

from napari_granseg.engine.source import ImagePlan
from napari_granseg.widgets._tasks import SyncRunner


def test_everything_here_and_on_the_worker_give_the_same_labels(session, one_thread):
    import napari_granseg as gs
    from napari_granseg.synthetic import nested_cells_scene
    from napari_granseg.widgets._everything_job import EverythingRequest
    from napari_granseg.widgets._everything_session import EverythingSession

    scenes = [nested_cells_scene(size=96, n_cells=2, seed=s) for s in (3, 4)]
    results = {}
    for name, image in (("image", scenes[0].image), ("stack", np.stack([s.image for s in scenes]))):
        plan = ImagePlan.from_array(image, name=name)
        source = ((1.0,) * len(plan.labels_shape), (0.0,) * len(plan.labels_shape))
        for where in (None, session):
            model = "unsamv2-demo" if where is not None else gs.load_model("unsamv2-demo", device="cpu")
            request = EverythingRequest(plan=plan, layer_name=name, source=source, granularities=(0.5, 1.0),
                                        model=model, precision="fp32", points=6)
            s = EverythingSession(SyncRunner())
            done = []
            s.finished.connect(done.append)
            s.run(request, where=where)
            assert s.last_error == "", s.last_error
            results[name, where is None] = done[0]
    for name in ("image", "stack"):
        here, there = results[name, True], results[name, False]
        assert [s["name"] for s in here["layers"]] == [s["name"] for s in there["layers"]]
        for a, b in zip(here["layers"], there["layers"]):
            assert a["data"].any()
            np.testing.assert_array_equal(np.asarray(a["data"]), np.asarray(b["data"]))
        assert here["summary"] == there["summary"]
    # the 2D run's quality features come back from the worker as well
    fine_here, fine_there = results["image", True]["layers"][0], results["image", False]["layers"][0]
    np.testing.assert_array_equal(fine_here["features"]["predicted_iou"], fine_there["features"]["predicted_iou"])


@pytest.mark.parametrize("references", ["labels", "box"])
def test_fewshot_here_and_on_the_worker_give_the_same_labels(session, one_thread, references):
    import napari_granseg as gs
    from napari_granseg.synthetic import shapes_scene
    from napari_granseg.widgets._fewshot_session import FewShotRequest, FewShotSession

    rng = np.random.default_rng(5)
    scenes = [shapes_scene(size=96, n_objects=3, rng=rng) for _ in range(6)]
    images, truth = np.stack([s[0] for s in scenes]), np.stack([s[1] for s in scenes])
    refs = np.zeros_like(truth, dtype=np.int32)
    refs[0] = truth[0]  # both classes painted on slice 0
    kind = {"labels": refs} if references == "labels" else {"prompts": {0: {"box": [5.0, 5.0, 50.0, 50.0]}}}
    outputs = []
    for where in (None, session):
        model = gs.load_model("sansa-demo", device="cpu") if where is None else None
        request = FewShotRequest(plan=ImagePlan.from_array(images), layer_name="series", source_name="refs",
                                 model=model, model_text="sansa-demo" if where is not None else "",
                                 image_size=None, precision="fp32", **kind)
        s = FewShotSession(SyncRunner())
        s.run(request, where=where)
        assert s.last_error == "" and s.done == 5, s.last_error
        outputs.append(np.asarray(s.output).copy())
    assert outputs[0][1:].any()
    np.testing.assert_array_equal(outputs[0], outputs[1])

"""The few-shot session without Qt or napari: references as labels or as prompts, the series read one group of
slices at a time, every target written into the output as it is done; the same labels as the engine."""
from __future__ import annotations

import numpy as np
import pytest

from napari_granseg.widgets._fewshot_session import FewShotRequest, FewShotSession
from napari_granseg.engine.source import ImagePlan
from napari_granseg.widgets._tasks import SyncRunner


@pytest.fixture(scope="module")
def series():
    from napari_granseg.synthetic import shapes_scene

    rng = np.random.default_rng(5)
    scenes = [shapes_scene(size=128, n_objects=4, rng=rng) for _ in range(6)]
    return np.stack([s[0] for s in scenes]), np.stack([s[1] for s in scenes])


@pytest.fixture(scope="module")
def sansa_demo(tmp_path_factory):
    import os
    from unittest import mock

    from napari_granseg import zoo

    env = {"GRANSEG_CACHE_DIR": str(tmp_path_factory.mktemp("granseg_cache")), "GRANSEG_OFFLINE": "1"}
    with mock.patch.dict(os.environ, env):
        return zoo.load_model("sansa-demo", device="cpu")


def _run(request, where=None, runner=None):
    session = FewShotSession(runner or SyncRunner())
    seen = {"slices": [], "failed": [], "output": []}
    session.slice_done.connect(seen["slices"].append)
    session.failed.connect(seen["failed"].append)
    session.output_ready.connect(lambda out, refs, targets, store: seen["output"].append((refs, targets)))
    session.run(request, where=where)
    return session, seen


def test_label_references_segment_every_other_slice_like_the_engine(series, sansa_demo):
    from napari_granseg.engine.fewshot import FewShotSegmenter
    from napari_granseg.engine.normalize import stack_intensity_range

    images, truth = series
    refs = np.zeros_like(truth, dtype=np.int32)
    refs[0] = truth[0] == 1
    refs[3] = (truth[3] == 1) * 1
    request = FewShotRequest(plan=ImagePlan.from_array(images), layer_name="series", source_name="refs", labels=refs,
                             model=sansa_demo, image_size=None, precision="fp32")
    runner = SyncRunner()
    session, seen = _run(request, runner=runner)
    assert session.last_error == "" and seen["failed"] == []
    assert seen["output"] == [([0, 3], [1, 2, 4, 5])] and seen["slices"] == [1, 2, 4, 5] and session.done == 4
    out = session.output
    np.testing.assert_array_equal(out[[0, 3]], refs[[0, 3]])  # the references are copied as they are
    fs = FewShotSegmenter(sansa_demo, image_size=None, precision="fp32",
                          intensity_range=stack_intensity_range(images))
    expected = fs.segment_classes([images[i] for i in (1, 2, 4, 5)], [refs[0], refs[3]], [images[0], images[3]])
    for i, want in zip((1, 2, 4, 5), expected):
        np.testing.assert_array_equal(out[i], want)
    assert [p.done for p in runner.progress if p.total == 4] == [1, 2, 3, 4]
    assert session.caveat() == ""  # label references: nothing to add, demo or not

    session, seen = _run(request, runner=SyncRunner(cancel_after=4))  # Cancel after the first slices
    assert session.done < 4 and session.last_error == "" and seen["failed"] == []


def test_prompt_references_and_mistakes(series, sansa_demo):
    from napari_granseg.engine.fewshot import FewShotSegmenter
    from napari_granseg.engine.normalize import stack_intensity_range

    images, _truth = series
    prompts = {0: {"box": [10.0, 10.0, 60.0, 60.0]}}
    request = FewShotRequest(plan=ImagePlan.from_array(images[:3]), layer_name="series", source_name="prompts",
                             prompts=prompts, model=sansa_demo, image_size=None)
    session, seen = _run(request)
    assert session.last_error == "" and session.done == 2
    fs = FewShotSegmenter(sansa_demo, image_size=None, intensity_range=stack_intensity_range(images[:3]))
    fs.add_reference(images[0], **prompts[0])
    for i in (1, 2):
        np.testing.assert_array_equal(session.output[i] > 0, fs.segment(images[i]).mask)
    assert not session.output[0].any()
    # the demo from a box: the result comes with what to do instead (it reads label references only)
    assert session.model_shown.demo and "paint a few objects of the class in a Labels layer" in session.caveat()

    empty = FewShotRequest(plan=ImagePlan.from_array(images), layer_name="series", source_name="refs",
                           labels=np.zeros(images.shape, np.int32), model=sansa_demo)
    session, seen = _run(empty)
    assert "no labels on any slice" in session.last_error and seen["output"] == []
    chosen = FewShotRequest(plan=ImagePlan.from_array(images), layer_name="series", source_name="refs",
                            labels=np.zeros(images.shape, np.int32), chosen=(2,), model=sansa_demo)
    session, _ = _run(chosen)
    assert "reference slices [2] have no labels" in session.last_error

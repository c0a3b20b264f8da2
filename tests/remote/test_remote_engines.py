"""Remote and local give the same labels; images travel once; errors and cancel behave as locally."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import napari_granseg as gs

UNSAM = "unsamv2-demo"
SANSA = "sansa-demo"


@pytest.fixture(scope="module")
def local_model():
    return gs.load_model(UNSAM, device="cpu")


def test_clicks_give_the_same_masks_logits_and_scores(session, local_model, scene, one_thread, exact_kwargs):
    pred = session.predictor(UNSAM, **exact_kwargs)
    local = gs.GranularityPredictor(local_model, **exact_kwargs)
    assert pred.has_granularity and pred.mask_threshold == local.mask_threshold and pred.is_demo
    pred.set_image(scene.image)
    local.set_image(scene.image)
    (row, col), (row2, col2) = scene.centers[0], scene.centers[1]
    for kwargs in ({"granularity": [0.2, 0.6, 1.0]}, {"granularity": 0.5, "refine": True},
                   {"granularity": 0.4, "return_logits": True}):
        points, labels = [[col, row], [col2, row2]], [1, 0]
        remote_out = pred.predict(points, labels, **kwargs)
        local_out = local.predict(points, labels, **kwargs)
        for got, want in zip(remote_out, local_out):
            assert got.dtype == want.dtype and np.array_equal(got, want)
    masks, _, low = pred.predict([[col, row]], [1], granularity=0.5, low_res=False)
    assert low is None and masks.dtype == bool and masks[0, int(row), int(col)]


def test_the_same_image_twice_sends_no_pixels(session, scene):
    pred = session.predictor(UNSAM)
    pred.set_image(scene.image)
    sent = dict(pred.stats)
    assert sent["images_sent"] == 1 and sent["image_bytes_sent"] > 0
    pred.set_image(scene.image.copy())  # same pixels, another array
    pred.predict([scene.centers[0][::-1]], [1], granularity=0.5)
    assert pred.stats["images_sent"] == 1 and pred.stats["image_bytes_sent"] == sent["image_bytes_sent"]
    other = scene.image.copy()
    other[0, 0] += 1
    pred.set_image(other)
    assert pred.stats["images_sent"] == 2


def test_three_line_calls_match_local(session, local_model, scene, one_thread):
    points = [tuple(c) for c in scene.centers]
    want = gs.segment(scene.image, points=points, granularity=[0.3, 0.9], model=local_model)
    got = session.segment(scene.image, points=points, granularity=[0.3, 0.9], model=UNSAM)
    assert got.dtype == want.dtype and np.array_equal(got, want) and got.max() == 2
    seen = []
    want = gs.segment_everything(scene.image, granularity=0.5, model=local_model, points_per_side=8)
    got = session.segment_everything(scene.image, granularity=0.5, model=UNSAM, points_per_side=8,
                                     progress=lambda done, total: seen.append((done, total)))
    assert np.array_equal(got, want) and got.max() >= 2
    assert all(0 <= d <= t for d, t in seen)
    got, info = session.segment_everything(scene.image, granularity=0.5, model=UNSAM, points_per_side=8,
                                           return_info=True)
    assert np.array_equal(got, want) and len(info) == got.max() and 0 < info[0]["predicted_iou"] <= 1.5


def test_bad_input_raises_the_engine_error_not_a_connection_error(session, scene):
    from napari_granseg.engine.interactive import PromptError

    pred = session.predictor(UNSAM)
    pred.set_image(scene.image)
    with pytest.raises(PromptError, match="outside the image"):
        pred.predict([[500.0, 3.0]], [1], granularity=0.5)
    with pytest.raises(ValueError, match="granularit"):
        pred.predict([[3.0, 3.0]], [1], granularity=3.0)
    masks, _, _ = pred.predict([[3.0, 3.0]], [1], granularity=0.5)  # the actor is still fine
    assert masks.shape == (1, *scene.image.shape)


def test_cancel_from_this_machine_stops_segment_everything_on_the_worker(session, scene):
    from napari_granseg.engine.automatic import Cancelled

    stop = threading.Event()
    seen = []

    def progress(done, total):
        seen.append(done)
        stop.set()  # ask to stop as soon as the worker reports work in progress

    stack = np.stack([scene.image] * 3)
    with pytest.raises(Cancelled):
        session.segment_everything_stack(stack, granularity=0.5, model=UNSAM, points_per_side=16,
                                         points_per_batch=16, progress=progress, cancel=stop)
    assert seen and seen[-1] < 3 * 256  # stopped before the end


def test_fewshot_matches_local(session, scene, one_thread):
    from napari_granseg.engine.fewshot import FewShotSegmenter
    from napari_granseg.synthetic import nested_cells_scene

    ref, target = scene, nested_cells_scene(size=96, n_cells=2, seed=11)
    ref_mask = ref.labels(1) > 0  # the nuclei
    local = FewShotSegmenter(gs.load_model(SANSA, device="cpu"), image_size=None)
    far = session.fewshot(SANSA, image_size=None)
    for fs in (local, far):
        assert fs.add_reference(ref.image, mask=ref_mask) == 1
        assert fs.add_reference(target.image, points=[target.centers[0][::-1]]) == 2
    want, got = local.segment(target.image), far.segment(target.image)
    for name in ("mask", "logits", "probability"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    labels = np.zeros(ref.image.shape, np.int32)
    labels[ref_mask] = 1
    series = np.stack([target.image, ref.image])
    want = local.segment_classes(series, [labels, labels], reference_images=[ref.image, target.image])
    got = far.segment_classes(series, [labels, labels], reference_images=[ref.image, target.image])
    assert len(got) == 2 and all(np.array_equal(g, w) for g, w in zip(got, want))
    seen = []
    got = list(far.segment_many(series, progress=lambda d, t: seen.append((d, t))))
    want = list(local.segment_many(series))
    assert seen == [(1, 2), (2, 2)]
    assert all(np.array_equal(g.mask, w.mask) and np.array_equal(g.logits, w.logits) for g, w in zip(got, want))
    assert got[0].mask.any()


def test_session_for_accepts_an_address_or_a_session(session):
    from napari_granseg import remote

    assert remote.session_for(session) is session
    assert remote.session_for(session.address) is session  # one cached session per address
    with pytest.raises(TypeError, match="scheduler="):
        remote.session_for(8786)


def test_propagation_matches_local_and_reports_progress(session, local_model, one_thread):
    from napari_granseg.engine.propagate import ObjectPrompt, propagate
    from napari_granseg.synthetic import nested_cells_stack

    stack, scenes = nested_cells_stack(n_slices=3, size=64, seed=2)
    row, col = scenes[1].centers[0]
    prompt = ObjectPrompt(frame=1, points=[[col, row]], labels=[1], obj_id=5)
    want = propagate(local_model, stack, prompt, granularity=0.6)
    seen = []
    got = session.propagate(stack, prompt, granularity=0.6, model=UNSAM, progress=lambda d, t: seen.append((d, t)))
    assert got.dtype == want.dtype and np.array_equal(got, want) and set(np.unique(got)) <= {0, 5}
    assert (got[1] == 5).any() and all(t == len(stack) + 1 for _, t in seen)  # the prompted slice twice

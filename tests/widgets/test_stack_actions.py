"""Writing objects and the stack jobs of the interactive widget, without a viewer: one undo step per write,
other labels never overwritten, refine replaces its own label, progress totals right, cancel stops early."""
from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("napari")

from napari.layers import Labels  # noqa: E402

from napari_granseg.widgets.interactive.jobs import embed_job, propagation_job  # noqa: E402
from napari_granseg.widgets.interactive.prompt_layers import scribble_points  # noqa: E402
from napari_granseg.widgets.interactive.writes import write_object, write_propagation  # noqa: E402
from napari_granseg.widgets._tasks import Progress  # noqa: E402


def _run(job, cancel_after=None):
    """Drive a job generator like the worker does; returns (progress list, result)."""
    seen, gen = [], job(lambda: cancel_after is not None and len(seen) >= cancel_after)
    try:
        while True:
            item = next(gen)
            if isinstance(item, Progress):
                seen.append(item)
    except StopIteration as stop:
        return seen, stop.value


def test_write_object_background_only_one_undo_step_and_refine():
    labels = Labels(np.zeros((2, 10, 10), np.int32))
    labels.data[1, 0:3, 0:3] = 5
    mask = np.zeros((10, 10), bool)
    mask[1:6, 1:6] = True
    label_id, n = write_object(labels, (1,), mask)
    assert label_id == 6 and n == 25 - 4                      # the 2x2 overlap with label 5 is kept
    assert (labels.data[1, 0:3, 0:3] == 5).all() and not labels.data[0].any()
    smaller = np.zeros((10, 10), bool)
    smaller[2:4, 2:8] = True                                  # refine label 6: shrink and move
    label_id, n = write_object(labels, (1,), smaller, refine_label=6)
    assert label_id == 6
    expected = smaller & (labels.data[1] != 5)
    np.testing.assert_array_equal(labels.data[1] == 6, expected)
    labels.undo()                                              # one undo step per write
    assert (labels.data[1] == 6).sum() == 21
    labels.undo()
    assert not (labels.data == 6).any() and (labels.data == 5).sum() == 9
    with pytest.raises(ValueError, match="already labelled"):
        write_object(labels, (1,), labels.data[1] == 5)


def test_write_propagation_keeps_the_committed_slice_and_is_one_undo_step():
    labels = Labels(np.zeros((4, 6, 6), np.int32))
    labels.data[2, 0, 0] = 3
    result = np.zeros((4, 6, 6), np.int32)
    result[:, 1:3, 1:3] = 3
    assert write_propagation(labels, result, 3, committed_slice=2) == 3
    assert (labels.data[2] == 3).sum() == 1 and (labels.data[[0, 1, 3]] == 3).sum() == 12
    labels.undo()
    assert (labels.data == 3).sum() == 1


def test_propagation_progress_reaches_its_total_and_embedding_cancel_stops_early(monkeypatch):
    import napari_granseg.engine.propagate as engine

    n = 5

    def fake(model, stack, prompt, progress=None, cancel=None, **kw):
        # SAM 2 visits the prompted slice in both directions: frames prompt..n-1, then prompt..0
        steps = list(range(prompt.frame, n)) + list(range(prompt.frame, -1, -1))
        for k, _ in enumerate(steps, 1):
            progress(k, 2 * n)
        return np.zeros((n, 4, 4), np.int32)

    monkeypatch.setattr(engine, "propagate", fake)
    seen, result = _run(propagation_job(object(), None, np.zeros((n, 4, 4)), engine.ObjectPrompt(frame=2)))
    assert [p.total for p in seen] == [n + 1] * (n + 1) and seen[-1].done == n + 1
    assert result.shape == (n, 4, 4)

    class Predictor:
        calls = 0
        lock = threading.RLock()

        def set_image(self, image, intensity=None):
            Predictor.calls += 1

    seen, done = _run(embed_job(Predictor(), np.zeros((8, 4, 4)), list(range(8))), cancel_after=3)
    assert done == 3 and Predictor.calls == 3                  # stopped at the next slice


def test_scribble_points_are_spread_along_the_stroke():
    pts = scribble_points(np.array([[0.0, 0.0], [0.0, 20.0], [20.0, 20.0]]))
    assert len(pts) == 8
    np.testing.assert_allclose(pts[0], [0, 0])
    np.testing.assert_allclose(pts[-1], [20, 20])
    on_first, on_second = np.isclose(pts[:, 0], 0), np.isclose(pts[:, 1], 20)
    assert (on_first | on_second).all() and on_first.sum() == 4 and on_second.sum() == 4   # even along the arc
    np.testing.assert_allclose(pts[1], [0, 40 / 7])

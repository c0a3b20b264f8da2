"""The preview state machine without Qt or napari: debounce, newest request wins, stale results dropped,
commit waits for the preview of the latest prompts, the g sweep answers the slider."""
from __future__ import annotations

import numpy as np
import pytest

from napari_granseg.widgets.interactive.preview import SWEEP_G, PreviewController, PreviewRequest, PreviewResult


class FakeTimer:
    def __init__(self):
        self.active = False

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    def isActive(self):
        return self.active


class Harness:
    """Drives a controller like the widget: ``g`` and ``points`` are the current prompts."""

    def __init__(self):
        self.timer = FakeTimer()
        self.points = [(5.0, 5.0)]
        self.g = 0.5
        self.launched: list[PreviewRequest] = []
        self.shown: list[tuple[PreviewResult, bool]] = []
        self.cleared = 0
        self.commits = 0
        self.refused: list[str] = []
        self.c = PreviewController(self.timer, self.snapshot, self.launched.append,
                                   lambda r, exact: self.shown.append((r, exact)), self.clear,
                                   commit=self.commit, cancel_commit=self.refused.append)

    def snapshot(self, serial):
        if not self.points:
            return None
        xy = np.asarray(self.points, np.float32)
        return PreviewRequest(serial, "img", (), np.zeros((8, 8)), xy, np.ones(len(xy), np.int32), self.g)

    def clear(self):
        self.cleared += 1

    def commit(self):
        self.commits += 1

    def elapse(self):
        """The debounce timer fires."""
        self.timer.active = False
        self.c.fire()

    def answer(self, req, value=1):
        """The worker returns a mask filled with ``value`` for ``req`` and ends."""
        mask = np.full((8, 8), value, np.uint8)
        shown = self.c.offer(PreviewResult(req, mask, 0.9, req.granularity))
        self.c.run_finished()
        return shown


def test_debounce_then_one_run_and_newest_request_wins():
    h = Harness()
    h.c.schedule()
    h.c.schedule()
    assert h.launched == [] and h.c.busy
    h.elapse()
    assert len(h.launched) == 1 and h.c.running
    first = h.launched[0]
    h.g = 0.9                       # slider moves while the first run is going
    h.c.schedule()
    h.elapse()
    assert len(h.launched) == 1 and h.c.pending   # queued, not a second concurrent run
    assert h.answer(first) is False                # its answer is stale: never shown
    assert h.shown == [] and len(h.launched) == 2  # the queued request ran at once
    second = h.launched[1]
    assert second.granularity == 0.9
    assert h.answer(second, 1) is True and h.c.ready
    assert h.shown[-1][0].request is second and h.shown[-1][1] is True


def test_invalidate_drops_the_result_in_flight_and_clears():
    h = Harness()
    h.c.schedule()
    h.elapse()
    req = h.launched[0]
    h.c.invalidate()                # "next object" while the preview is computed
    assert h.cleared == 1
    assert h.answer(req) is False and h.c.shown is None and h.shown == []


def test_commit_right_after_a_click_waits_for_that_click_preview():
    h = Harness()
    h.c.schedule()
    h.elapse()
    h.answer(h.launched[0], 1)
    assert h.c.ready and h.c.commit_when_ready() is True   # nothing pending: commit now
    h.points.append((7.0, 7.0))     # a new click ...
    h.c.schedule()
    assert h.c.commit_when_ready() is False                 # ... C now must not write the old mask
    assert h.commits == 0 and h.c.want_commit
    h.elapse()
    assert h.commits == 0
    h.answer(h.launched[1], 2)
    assert h.commits == 1 and h.c.shown.request is h.launched[1]


def test_commit_is_refused_with_a_reason_when_the_prompts_disappear():
    h = Harness()
    h.points = []
    with pytest.raises(ValueError, match="click on an object first"):
        h.c.commit_when_ready()
    h.points = [(1.0, 1.0)]
    h.c.schedule()
    h.c.commit_when_ready()
    h.points = []                   # the click was deleted before the debounce fired
    h.elapse()
    assert h.commits == 0 and h.refused and "nothing to commit" in h.refused[0]


def test_sweep_gives_the_slider_the_nearest_mask_at_once_and_the_exact_one_without_a_run():
    h = Harness()
    h.c.schedule()
    h.elapse()
    req = h.launched[0]
    h.c.offer(PreviewResult(req, np.zeros((8, 8), np.uint8), 0.9, 0.5))
    masks = [np.full((8, 8), i, np.uint8) for i in range(len(SWEEP_G))]
    h.c.store_sweep(req, SWEEP_G, masks)
    h.c.run_finished()
    h.g = 0.74
    assert h.c.quick_show(0.74)
    result, exact = h.shown[-1]
    assert exact is False and result.granularity == 0.7 and result.mask[0, 0] == SWEEP_G.index(0.7)
    h.g = 0.8                       # a value the sweep decoded: exact answer without a model run
    h.c.schedule()
    h.elapse()
    assert len(h.launched) == 1
    assert h.c.ready and h.c.shown.granularity == 0.8 and h.c.shown.mask[0, 0] == SWEEP_G.index(0.8)
    h.points.append((2.0, 2.0))     # new prompts: the old sweep does not apply
    h.c.schedule()
    h.elapse()
    assert len(h.launched) == 2

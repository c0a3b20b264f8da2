"""The background-task plumbing the everything and few-shot widgets share (no Qt needed)."""
from __future__ import annotations

import threading
import time

import pytest

from napari_granseg.widgets import _tasks as _common  # errors live with the runner
from napari_granseg.widgets._tasks import Progress, blocking_with_progress, rescaled_progress


def test_cancel_ends_the_task_only_once_the_work_has_stopped():
    cancel, stopped = threading.Event(), threading.Event()

    def work(progress, is_cancelled):
        for i in range(10_000):
            if is_cancelled():
                stopped.set()
                return "partial"
            progress(i + 1, 10_000)
            time.sleep(0.005)
        return "all"

    steps = blocking_with_progress(work, cancel.is_set)
    assert isinstance(next(steps), Progress)
    cancel.set()
    with pytest.raises(StopIteration) as end:
        while True:
            next(steps)
    assert stopped.is_set()  # no computation goes on behind the cancelled task
    assert end.value.value is None


def test_progress_of_several_parts_is_one_bar():
    def part(n):
        for i in range(1, n + 1):
            yield Progress(i, n)
        return f"done {n}"

    seen, values = [], []
    for k in range(3):
        gen = rescaled_progress(part(4), k, 3, "level")
        while True:
            try:
                seen.append(next(gen))
            except StopIteration as stop:
                values.append(stop.value)
                break
    assert [(p.done, p.total) for p in seen] == [(i, 12) for i in range(1, 13)]
    assert values == ["done 4"] * 3


def test_bugs_are_reported_as_internal_errors_and_user_mistakes_as_they_are(monkeypatch, caplog):
    shown = []
    monkeypatch.setattr(_common, "notify", lambda level, text: shown.append((level, text)))
    assert _common.notify_error(ValueError("pick an image layer"), "Few-shot") == "Few-shot: pick an image layer"
    text = _common.notify_error(KeyError("features"), "Few-shot")
    assert "internal error, please report" in text and "KeyError" in text
    assert any(r.exc_info for r in caplog.records)  # the bug's traceback is in the log
    assert _common.guard(lambda: 1 / 0, "Export") is None and "ZeroDivisionError" in shown[-1][1]
    assert [level for level, _ in shown] == ["error"] * 3

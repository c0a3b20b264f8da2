"""A worker killed in the middle of a job: one clear RemoteError, nothing written locally, and the next call
resumes on the worker the nanny starts in its place (runs last: it replaces the session's worker)."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from napari_granseg.remote import RemoteError

UNSAM = "unsamv2-demo"


def test_killed_worker_raises_remote_error_leaves_labels_and_resumes(session, scene, one_thread):
    pred = session.predictor(UNSAM)
    pred.set_image(scene.image)
    click = [scene.centers[0][::-1]]
    before_masks, before_ious, _ = pred.predict(click, [1], granularity=0.5)
    pid = pred.info()["pid"]

    user_labels = np.full((4, *scene.image.shape), 7, np.int32)  # what the user had in the layer
    original = user_labels.copy()
    seen = []

    def progress(done, total):
        seen.append((done, total))
        if len(seen) == 1:  # the worker is mid-job: kill it as a crash or an OOM killer would
            os.kill(pid, signal.SIGKILL)

    stack = np.stack([scene.image] * 4)
    with pytest.raises(RemoteError) as info:
        user_labels[:] = pred.segment_everything_stack(stack, granularity=0.5, points_per_side=32,
                                                       points_per_batch=16, progress=progress)
    msg = str(info.value)
    assert f"the GPU worker at {session.address}" in msg and "stopped" in msg
    assert "your local labels are unchanged" in msg
    assert f"napari_granseg.remote.connect({session.address!r})" in msg
    assert seen and seen[0][0] < seen[0][1]  # it really was mid-run
    assert np.array_equal(user_labels, original)

    # the nanny restarts the worker; the next call makes a new actor there and replays the current image
    session.client.wait_for_workers(1, timeout=120)
    masks, ious, _ = pred.predict(click, [1], granularity=0.5)
    assert pred.info()["pid"] != pid
    assert np.array_equal(masks, before_masks) and np.array_equal(ious, before_ious)

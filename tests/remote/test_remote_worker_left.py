"""The three-line remote call (``remote.connect(address).segment(image, points)``) keeps working when the worker
that holds its shared predictor left the cluster between two calls (retired, scaled down, its node taken back):
the next call loads the model on a worker that is still there and gives the same labels. Its own small
LocalCluster of two workers: the session-wide one must keep its worker for the other remote tests."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("dask.distributed")


@pytest.fixture
def two_workers():
    from dask.distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None)
    yield cluster
    cluster.close()


def test_a_three_line_call_after_its_worker_left_loads_again_with_the_same_labels(two_workers, scene):
    from napari_granseg import remote

    session = remote.connect(two_workers.scheduler_address, timeout=30)
    try:
        _leave_and_call_again(session, two_workers, scene)
    finally:
        session.close()  # this test's session only: the session-wide one serves the other remote tests


def _leave_and_call_again(session, two_workers, scene):
    points = [scene.centers[0], scene.centers[1]]
    first = session.segment(scene.image, points, granularity=1.0, precision="fp32")
    assert first.max() == 2
    shared = session._shared_predictor(None)  # the predictor the three-line calls share
    gone, pid = shared.handle.worker, shared.info()["pid"]
    # that worker leaves: what `cluster.scale(1)` does, choosing the worker (dask refuses to retire a worker
    # that holds an actor, as a scheduler that takes a node back does not ask)
    name = session.client.scheduler_info()["workers"][gone]["name"]
    del two_workers.worker_spec[name]
    two_workers.sync(two_workers._correct_state)
    deadline = time.monotonic() + 60
    while gone in session.client.scheduler_info()["workers"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(session.client.scheduler_info()["workers"]) not in ([], [gone])

    again = session.segment(scene.image, points, granularity=1.0, precision="fp32")
    np.testing.assert_array_equal(again, first)
    assert shared.handle.worker != gone and shared.info()["pid"] != pid  # loaded again, on the other worker
    assert session._shared_predictor(None) is shared  # still one predictor per model for the three-line calls

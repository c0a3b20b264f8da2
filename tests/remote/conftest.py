"""What the remote tests compare with; the LocalCluster itself (``cluster``) and ``one_thread`` are in
tests/conftest.py (the interactive session's tests use them too).

The worker is a separate process started by a dask nanny, exactly as on a GPU box, so the actors, the packing
and the failure paths run for real. Its torch uses one thread (dask sets OMP_NUM_THREADS=1 in workers), so
local reference results are computed with one thread too.
"""
from __future__ import annotations

import inspect

import pytest


@pytest.fixture(scope="session")
def session(cluster):
    from napari_granseg import remote

    return remote.connect(cluster.scheduler_address, timeout=30)


@pytest.fixture(scope="session")
def exact_kwargs():
    """precision='fp32' where the predictor takes it (the official float32 computation), else nothing."""
    from napari_granseg.engine.interactive import GranularityPredictor

    return {"precision": "fp32"} if "precision" in inspect.signature(GranularityPredictor).parameters else {}


@pytest.fixture(scope="session")
def scene():
    from napari_granseg.synthetic import nested_cells_scene

    return nested_cells_scene(size=96, n_cells=2, seed=3)

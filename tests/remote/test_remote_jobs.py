"""One job body, a parameter for where: ``jobs.segment_everything_slices`` gives identical labels with the model
on this machine and on the worker of a LocalCluster (a stack at two granularities, a tiled 2D image)."""
from __future__ import annotations

import numpy as np

from napari_granseg.compute import Local
from napari_granseg.engine.source import ImagePlan
from napari_granseg.jobs import segment_everything_slices
from napari_granseg.synthetic import nested_cells_scene, nested_cells_stack

UNSAM = "unsamv2-demo"
SETTINGS = {"points_per_side": 6}


def _both(plan, levels, session):
    runs = {}
    for name, where in (("local", Local(device="cpu")), ("remote", session)):
        seen = []
        runs[name] = segment_everything_slices(plan, levels, model=UNSAM, precision="fp32", where=where,
                                               settings=SETTINGS, progress=lambda d, t: seen.append((d, t)))
        fractions = [done / total for done, total in seen]
        assert fractions and fractions[-1] == 1.0, (name, seen[-3:])  # progress ends at its total
        assert all(b >= a for a, b in zip(fractions, fractions[1:])), (name, seen)  # and never goes back
    return runs["local"], runs["remote"]


def test_a_stack_at_two_granularities_is_the_same_here_and_on_the_worker(session, one_thread):
    stack, _ = nested_cells_stack(n_slices=2, size=64, seed=5, n_cells=2)
    plan = ImagePlan.from_array(stack)
    local, remote = _both(plan, [0.4, 1.0], session)
    for g in (0.4, 1.0):
        want, got = local[g][0], remote[g][0]
        assert got.shape == stack.shape and got.dtype == np.int32 and np.array_equal(got, want)
        ids = [set(np.unique(s)) - {0} for s in got]
        assert all(ids) and not (ids[0] & ids[1])  # ids unique across slices


def test_a_tiled_image_is_the_same_here_and_on_the_worker(session, one_thread):
    scene = nested_cells_scene(size=128, n_cells=3, seed=7)
    plan = ImagePlan.from_array(scene.image, scale="tile", tile=80)
    local, remote = _both(plan, [1.0], session)
    (want, info_here), (got, info_there) = local[1.0], remote[1.0]
    assert info_here is None and info_there is None  # tiled: no per-label info
    assert got.shape == scene.image.shape and got.max() > 0 and np.array_equal(got, want)
    whole = ImagePlan.from_array(scene.image, scale="downscale")
    local, remote = _both(whole, [1.0], session)
    assert np.array_equal(local[1.0][0], remote[1.0][0])
    assert len(local[1.0][1]) == len(remote[1.0][1]) == int(local[1.0][0].max())  # one info per label

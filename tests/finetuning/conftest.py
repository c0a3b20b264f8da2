"""Fixtures of the fine-tuning tests: the bundled demo UnSAMv2 (a private, offline model cache), four labelled
images of a domain it never saw (dark lobed blobs on a bright background), and ONE short fine-tune of it,
written to a checkpoint, that the round-trip, cache and score tests share."""
from __future__ import annotations

import os
from unittest import mock

import pytest

#: Small and few: the suite runs on 2 shared cores. Enough steps for a real gain on this domain.
SIZE, STEPS = 96, 60


@pytest.fixture(scope="session")
def ft_cache(tmp_path_factory):
    env = {"GRANSEG_CACHE_DIR": str(tmp_path_factory.mktemp("ft_cache")), "GRANSEG_OFFLINE": "1"}
    with mock.patch.dict(os.environ, env):
        yield env["GRANSEG_CACHE_DIR"]


@pytest.fixture(scope="session")
def demo_model(ft_cache):
    from napari_granseg import zoo

    return zoo.load_model("unsamv2-demo", device="cpu")


@pytest.fixture(scope="session")
def blob_data():
    """(images, labels) of four training scenes and (images, labels) of two unseen scenes."""
    from napari_granseg.synthetic_domains import dark_blobs_scene

    train = [dark_blobs_scene(size=SIZE, n_objects=5, seed=s) for s in range(4)]
    test = [dark_blobs_scene(size=SIZE, n_objects=5, seed=s) for s in (50, 51)]
    return ([i for i, _ in train], [lab for _, lab in train]), ([i for i, _ in test], [lab for _, lab in test])


@pytest.fixture(scope="session")
def finetuned(demo_model, blob_data, tmp_path_factory):
    """(model returned by gs.finetune, checkpoint path, progress records)."""
    import napari_granseg as gs
    from napari_granseg.finetuning.trainer import FinetuneSettings

    (images, labels), _ = blob_data
    out = tmp_path_factory.mktemp("ft_out") / "blobs.pt"
    seen = []
    model = gs.finetune(images, labels, model=demo_model, granularity=1.0, out=out, steps=STEPS,
                        progress=lambda *a: seen.append(a), settings=FinetuneSettings(augment=4))
    return model, out, seen

"""``trained_sansa``: a tiny SANSA trained from scratch in the session (granseg_training.sansa, fast recipe)
on synthetic discs (class 1) vs triangles (class 2), saved in the upstream layout and loaded back through
``napari_granseg.load_model``. ``GRANSEG_TEST_FIXTURE_CACHE=DIR`` (developers only, never CI) reuses a
saved run."""
from __future__ import annotations

import pytest

TRAINED_SANSA_STEPS = 1000


@pytest.fixture(scope="session")
def trained_sansa_run(tmp_path_factory):
    """(LoadedModel, history, checkpoint path)."""
    import json
    import os
    import shutil
    from pathlib import Path

    import torch

    import napari_granseg as gs
    from granseg_training.sansa.recipes import fast_test_config
    from granseg_training.sansa.trainer import SansaTrainer

    cache = os.environ.get("GRANSEG_TEST_FIXTURE_CACHE")
    cached = Path(cache) / f"sansa_{TRAINED_SANSA_STEPS}" if cache else None
    if cached is not None and (cached / "history.json").is_file():
        ckpt = next(cached.glob("*.pt*"))
        loaded = gs.load_model(ckpt, kind="sansa", config="granseg_tiny.yaml", device="cpu")
        return loaded, json.loads((cached / "history.json").read_text()), ckpt
    out = tmp_path_factory.mktemp("sansa_trained")
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    try:
        trainer = SansaTrainer(fast_test_config(out, seed=0, steps=TRAINED_SANSA_STEPS))
        history = trainer.fit()
        path = trainer.save()
    finally:
        torch.set_num_threads(threads)
    if cached is not None:
        cached.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, cached / Path(path).name)
        (cached / "history.json").write_text(json.dumps(history))
    loaded = gs.load_model(path, kind="sansa", config="granseg_tiny.yaml", device="cpu")
    return loaded, history, path


@pytest.fixture(scope="session")
def trained_sansa(trained_sansa_run):
    return trained_sansa_run[0]

"""Fixtures of the widget tests: the bundled demo UnSAMv2 (trained on synthetic cells, ships with the package),
loaded once per session through the zoo as a user's "Load" does, offline and with a private cache folder."""
from __future__ import annotations

import os
from unittest import mock

import pytest


@pytest.fixture(scope="session")
def demo_unsamv2(tmp_path_factory):
    from napari_granseg import zoo

    env = {"GRANSEG_CACHE_DIR": str(tmp_path_factory.mktemp("granseg_cache")), "GRANSEG_OFFLINE": "1"}
    with mock.patch.dict(os.environ, env):
        return zoo.load_model("unsamv2-demo", device="cpu")


@pytest.fixture
def no_cached_models(tmp_path, monkeypatch):
    """An empty model cache: the default model is the bundled demo, as on a fresh install offline."""
    monkeypatch.setenv("GRANSEG_CACHE_DIR", str(tmp_path / "cache"))

"""The dependency ranges of pyproject.toml admit only working pairs, and the lock file agrees with them.

Building a second venv from the ranges in CI is too slow; instead these tests check what such an install
would meet: every distribution installed here (from the lock) satisfies the declared ranges, dask and
distributed, which are released in lock-step, carry the same version, and the lock pins nothing that the ranges
refuse.
"""
from __future__ import annotations

import importlib.util
try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _check_env():
    spec = importlib.util.spec_from_file_location("check_env", ROOT / ".ci" / "check_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["testing"]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate()]


def test_installed_distributions_satisfy_the_ranges():
    unmet = []
    for req in _requirements():
        version = metadata.version(req.name)
        if not req.specifier.contains(version, prereleases=True):
            unmet.append(f"{req.name} {version} not in {req.specifier}")
    assert not unmet, unmet


def test_dask_and_distributed_move_together():
    assert metadata.version("distributed") == metadata.version("dask")
    names = {canonicalize_name(r.name): r for r in _requirements()}
    # the ranges themselves exclude the 2021 distributed that pip picked when both were unpinned
    assert not names["distributed"].specifier.contains("2021.4.1")
    assert "distributed" in names["dask"].extras


def test_the_lock_pins_versions_the_ranges_accept():
    pins = _check_env().read_lock(ROOT / "requirements-lock.txt")
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is a dependency but requirements-lock.txt does not pin it"
        assert req.specifier.contains(pins[name], prereleases=True), f"lock pins {name}=={pins[name]}, " \
                                                                     f"outside {req.specifier}"
    assert pins["dask"] == pins["distributed"]


def test_lock_mismatches_names_each_difference():
    check_env = _check_env()
    pins = {"dask": "2026.8.0", "zarr": "3.1.6"}
    assert check_env.lock_mismatches(pins, {"dask": "2026.8.0", "zarr": "3.1.6"}) == []
    problems = check_env.lock_mismatches(pins, {"dask": "2026.11.0"})
    assert problems == ["dask: lock says 2026.8.0, installed 2026.11.0", "zarr: lock says 3.1.6, installed nothing"]


@pytest.mark.parametrize("name", ["dask", "torch", "napari"])
def test_the_lock_is_what_is_installed(name):
    pins = _check_env().read_lock(ROOT / "requirements-lock.txt")
    assert metadata.version(name) == pins[name]

"""Fail loudly when the installed environment is broken, and say what was installed.

Why: a registry release once left `pip check` clean while `dask.distributed` could not be imported (pip paired a
new dask with a 2021 distributed). So after installing we import what the plugin needs at run time, start a
dask LocalCluster and run one task, run `pip check`, and compare every `name==version` of the lock file with
what is installed. Exit status 1 names each problem.

    python .ci/check_env.py [--lock requirements-lock.txt]
"""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

RUNTIME_MODULES = ["torch", "torchvision", "sam2", "napari", "dask.distributed", "zarr", "tifffile",
                   "huggingface_hub", "gdown", "pooch", "skimage", "scipy", "pandas", "qtpy", "superqt",
                   "napari_granseg", "granseg_training"]
REPORTED = ["torch", "torchvision", "sam2", "napari", "dask", "distributed", "zarr", "numpy", "PyQt6"]


def read_lock(path: Path) -> dict[str, str]:
    """{canonical name: version} of a pip constraints file made of `name==version` lines."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def installed_versions() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def lock_mismatches(pins: dict[str, str], installed: dict[str, str]) -> list[str]:
    return [f"{name}: lock says {want}, installed {installed.get(name, 'nothing')}"
            for name, want in sorted(pins.items()) if installed.get(name) != want]


def check_cluster() -> str | None:
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        got = client.submit(sum, [1, 2, 3]).result(timeout=60)
    return None if got == 6 else f"dask.distributed LocalCluster computed {got!r} for sum([1, 2, 3])"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=Path(__file__).resolve().parents[1] / "requirements-lock.txt")
    args = parser.parse_args(argv)
    problems = []
    for name in RUNTIME_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any failure to import is a broken install
            problems.append(f"import {name} failed: {type(exc).__name__}: {exc}")
    if not problems:
        problem = check_cluster()
        if problem:
            problems.append(problem)
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    if check.returncode != 0:
        problems.append("pip check: " + check.stdout.strip())
    installed = installed_versions()
    problems += lock_mismatches(read_lock(args.lock), installed)
    print("installed: " + ", ".join(f"{n} {installed.get(canonicalize_name(n), '-')}" for n in REPORTED))
    for problem in problems:
        print("BROKEN ENVIRONMENT: " + problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""The package versions that must agree between this machine and the GPU worker.

Objects travel pickled (cloudpickle, msgpack), the worker imports this package's actor classes by name, and
the masks must be the ones this machine would compute: a different Python minor version, dask, numpy,
napari-granseg, torch or sam2 on the worker breaks one of these, sometimes silently. ``torch`` is compared
without its build tag (``2.14.1+cu130`` on the GPU box equals ``2.14.1`` on a laptop).
"""
from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

__all__ = ["local_versions", "version_differences", "CHECKED"]

CHECKED = ("python", "napari-granseg", "torch", "sam2", "numpy", "dask", "distributed", "cloudpickle", "msgpack")


def _version(dist: str) -> str | None:
    if dist == "python":
        return f"{sys.version_info.major}.{sys.version_info.minor}"
    if dist == "napari-granseg":  # the imported copy (a source checkout may differ from the installed one)
        import napari_granseg

        return napari_granseg.__version__
    try:
        v = version(dist)
    except PackageNotFoundError:
        return None
    return v.split("+")[0] if dist == "torch" else v


def local_versions() -> dict[str, str | None]:
    """This process's versions of :data:`CHECKED` (run on workers through ``client.run``)."""
    return {name: _version(name) for name in CHECKED}


def version_differences(here: dict, workers: dict[str, dict]) -> list[str]:
    """One line per package whose version differs between this machine and a worker (empty: all agree)."""
    lines = []
    for name in CHECKED:
        for addr, theirs in sorted(workers.items()):
            mine, other = here.get(name), (theirs or {}).get(name)
            if mine != other:
                lines.append(f"  {name}: this machine {mine or 'not installed'}, worker {addr} "
                             f"{other or 'not installed'}")
    return lines

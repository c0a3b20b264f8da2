"""Importing torch in a worker thread without freezing napari's GUI thread.

Why this exists: ``import torch`` in a worker thread still holds Python's interpreter lock for long stretches,
and the GUI thread needs that lock for every event it handles, so napari froze although the import ran "in the
background". Measured with ``benchmarks/gui_stall.py --trace`` and a 10 ms ticker on a 2-core CPU: the dynamic
loading of torch's C++ libraries inside ``import torch._C`` held the lock for ~180 ms in one piece, and the
cyclic garbage collector, set off by the hundreds of thousands of objects the import creates, for up to ~100 ms
more. Two measures, both invisible to the imported code:

* torch's shared libraries are loaded first through libc's ``dlopen`` called via ctypes, which releases the
  lock for the duration of the call (Python's import of an extension module keeps it); ``import torch`` then
  finds them already loaded;
* the garbage collector is paused during the import, and what was imported is frozen afterwards
  (:func:`gc.freeze`), so later collections on the GUI thread do not walk torch's objects again.

Longest GUI gap while a worker imports torch, sam2 and torchvision: 180-200 ms plain, 26-56 ms with both.
Anything unexpected (another platform, a library that will not load) falls back to the plain import.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# in dependency order; the CUDA one only exists in CUDA wheels
_TORCH_LIBRARIES = ("c10", "torch_cpu", "c10_cuda", "torch_cuda", "torch", "torch_python")
_SUFFIX = {"linux": ".so", "darwin": ".dylib"}


def preload_torch_libraries() -> int:
    """Load torch's C++ libraries with the interpreter lock released; returns how many were loaded.

    Does nothing once torch is imported, on Windows, or where the libraries are not where a pip/conda torch
    keeps them. Stops at the first library that does not load (torch's own import then handles it).
    """
    suffix = _SUFFIX.get(sys.platform)
    if suffix is None or "torch" in sys.modules:
        return 0
    try:
        spec = importlib.util.find_spec("torch")
        libc = ctypes.CDLL(None)
        dlopen = libc.dlopen
    except (ImportError, OSError, AttributeError, ValueError):
        return 0
    if spec is None or spec.origin is None:
        return 0
    dlopen.restype, dlopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
    folder = Path(spec.origin).parent / "lib"
    loaded = 0
    for name in _TORCH_LIBRARIES:
        path = folder / f"lib{name}{suffix}"
        if not path.is_file():
            continue
        # a foreign call through ctypes.CDLL releases the interpreter lock while dlopen runs
        if not dlopen(os.fsencode(path), os.RTLD_NOW | os.RTLD_LOCAL):
            log.debug("napari-granseg: could not preload %s; torch's import will load it", path)
            break
        loaded += 1
    return loaded


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a large import, then freeze what it created.

    The pause is process-wide but short (the seconds of an import); without it a full collection in the middle
    of the import stops every thread, the GUI included, for up to ~100 ms.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.freeze()

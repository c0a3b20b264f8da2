"""What a batch job reads: image files from files and folders, and slices of stacks larger than memory.

Stacks are opened lazily (a dask array over the TIFF pages or zarr chunks), once per process and file
version, so a worker reads only the slice it segments. A stack's intensity range is computed once, from a
strided sample of slices, and shared by every slice (the policy of :mod:`napari_granseg.engine.normalize`:
a slice looks the same to the model whichever worker segments it).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..io import IMAGE_SUFFIXES, is_image_file, open_stack

__all__ = ["Item", "expand_inputs", "file_stamp", "is_stack_shape", "read_slice", "stack_intensity",
           "NoImagesError"]


class NoImagesError(FileNotFoundError):
    """The inputs hold no image the batch run can take."""


@dataclass(frozen=True)
class Item:
    """One unit of work: an input file (or one slice of a stack) and where its result goes.

    intensity: the (lo, hi) range shared by all slices of a stack (None: the image's own range).
    """

    input: str
    output: str
    prompts: tuple = ()
    fingerprint: str = ""
    index: int | None = None  # stack slice
    intensity: tuple[float, float] | None = None


def file_stamp(path: str | os.PathLike) -> list[int]:
    """(size, mtime) of a file, [-1, -1] when it cannot be read: a cheap "has it changed" key."""
    try:
        st = os.stat(path)
        return [int(st.st_size), int(st.st_mtime_ns)]
    except OSError:
        return [-1, -1]


def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Image files from files and folders (folders: image suffixes only, ``*_labels.*`` outputs excluded)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir() and p.suffix.lower() != ".zarr":
            found = p.rglob("*") if recursive else p.iterdir()
            files += sorted(f for f in found if f.is_file() and is_image_file(f))
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"input {p} does not exist: check the path (relative paths start in "
                                    f"{Path.cwd()})")
    seen, unique = set(), []
    for f in files:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique


def no_images_error(inputs: Any, recursive: bool) -> NoImagesError:
    """The one message for inputs without images, with what to do."""
    hint = "" if recursive else "; images in sub-folders need --recursive"
    return NoImagesError(f"no images found in {inputs} (looked for {', '.join(IMAGE_SUFFIXES)}; files named "
                         f"*_labels.* are outputs and are left out{hint})")


def is_stack_shape(shape: Sequence[int], channels_chosen: bool = False) -> bool:
    """(N, H, W[, C]) rather than one (H, W[, C]) image: the image plan's rule (``engine.source``)."""
    from ..engine.source import is_stack_shape as rule

    return rule(shape, channels_chosen)


_lock = threading.Lock()
_STACKS: dict[tuple, Any] = {}


def _stack(path: str) -> Any:
    """This process's lazy view of ``path`` (opening a TIFF parses all its pages: once per file version)."""
    key = (path, tuple(file_stamp(path)))
    with _lock:
        stack = _STACKS.get(key)
        if stack is None:
            _STACKS.clear()
            stack = _STACKS[key] = open_stack(path)
        return stack


def read_slice(path: str, index: int) -> np.ndarray:
    """Slice ``index`` of the stack at ``path``, read in this process (even on a dask worker)."""
    return np.asarray(_stack(path)[index].compute(scheduler="synchronous"))


def stack_intensity(path: str | os.PathLike, max_slices: int = 16) -> tuple[float, float] | None:
    """The (lo, hi) range all slices of a stack share, from at most ``max_slices`` evenly strided slices.

    Reading a strided sample keeps this cheap for stacks larger than memory (a few slices, never the whole
    stack). None for uint8 stacks: they keep their natural range (0, 255), exactly as single images do.
    """
    from ..engine.normalize import stack_intensity_range

    stack = _stack(str(path))

    class _Slices:  # slice reads without dask's threads, inside a batch worker
        dtype, shape = stack.dtype, stack.shape

        def __getitem__(self, i):
            return stack[i].compute(scheduler="synchronous")

    return stack_intensity_range(_Slices(), max_slices=max_slices)

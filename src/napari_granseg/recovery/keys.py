"""Which store belongs to an image: its file (path, size, modification time) or, without a file, its content.

Why both: an image opened from a file is found again when the same file is opened after a crash, however the
pixels are loaded; a changed file (other size or time) is another image, so old labels are never offered over
new pixels. An image made in the console or pasted in has no file: its key is a fingerprint of its content,
read from at most :data:`FINGERPRINT_BYTES` (the whole image when small, evenly spaced slices otherwise), so
keying a large dask/zarr stack does not read it whole.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ImageKey", "path_key", "content_key", "FINGERPRINT_BYTES"]

#: at most this many bytes of an image are read for its content fingerprint
FINGERPRINT_BYTES = 32 * 2**20
_SAMPLED_SLICES = 8


@dataclass(frozen=True)
class ImageKey:
    """``kind`` "path" or "content"; ``ident`` the text hashed into the store's folder name ``store_id``."""

    kind: str
    ident: str
    source: str | None
    shape: tuple[int, ...]
    dtype: str

    @property
    def store_id(self) -> str:
        return hashlib.sha256(self.ident.encode()).hexdigest()[:24]


def path_key(path: str | os.PathLike, shape: tuple[int, ...] = (), dtype: Any = None) -> ImageKey:
    """The key of an image read from ``path`` (a file, or a folder such as an OME-Zarr; a URL as it is)."""
    text = os.fspath(path)
    if "://" in str(text):  # a remote image (http, s3): its address; reading it to fingerprint would be slow
        return ImageKey("path", f"url:{text}", str(text), tuple(int(s) for s in shape),
                        "" if dtype is None else str(np.dtype(dtype)))
    p = Path(path).expanduser().resolve()
    try:
        st = p.stat()
    except OSError as exc:
        raise ValueError(f"recovery: cannot read {p} ({exc.strerror}): key the image by its content instead")
    ident = f"path:{p}|size={st.st_size}|mtime_ns={st.st_mtime_ns}"
    return ImageKey("path", ident, str(p), tuple(int(s) for s in shape), "" if dtype is None else str(np.dtype(dtype)))


def _hash_block(h, block: Any) -> None:
    h.update(np.ascontiguousarray(np.asarray(block)).tobytes())


def content_key(data: Any) -> ImageKey:
    """The key of an image given as an array (numpy, dask, zarr): shape, dtype and a fingerprint of its pixels.

    A 2D image is hashed whole, or through evenly spaced rows when larger than :data:`FINGERPRINT_BYTES`; a
    stack one slice at a time (never read whole): all its slices when small, else evenly spaced ones (and
    evenly spaced rows of a slice too large by itself). At most about :data:`FINGERPRINT_BYTES` are read.
    """
    shape = tuple(int(s) for s in data.shape)
    dtype = np.dtype(data.dtype)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((shape, dtype.str)).encode())
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes == 0:
        pass  # an empty image: shape and dtype are all there is
    elif len(shape) <= 2:
        step = max(1, int(np.ceil(nbytes / FINGERPRINT_BYTES)))
        _hash_block(h, data if step == 1 else data[::step])
    else:
        n = shape[0]
        picks = range(n) if nbytes <= FINGERPRINT_BYTES else sorted(
            set(np.linspace(0, n - 1, min(n, _SAMPLED_SLICES)).round().astype(int).tolist()))
        per_slice = FINGERPRINT_BYTES // len(picks)
        step = max(1, int(np.ceil((nbytes // n) / per_slice)))  # rows of one slice
        for z in picks:
            _hash_block(h, data[z] if step == 1 else data[z, ::step])
    return ImageKey("content", f"content:{h.hexdigest()}", None, shape, dtype.str)

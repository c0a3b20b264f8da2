"""One entry of the recovery store: the labels one session wrote into one layer, kept chunk by chunk.

An entry is a folder: ``manifest.json`` (name, shape, dtype, chunk shape, last complete generation, times,
writer, session) and chunk files ``<coords>~<generation>`` (see :mod:`.files` for why chunks are never
overwritten). :meth:`Entry.record` writes only the chunks whose content changed, then swaps the manifest;
a crash at any point leaves the previous complete state readable. Only the entry's own session writes it.
"""
from __future__ import annotations

import errno
import itertools
import os
import shutil
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .files import (TMP_PREFIX, chunk_name, decode_chunk, encode_chunk, flush_files, iter_chunk_files, read_json,
                    write_json)
from .session import current_session

__all__ = ["Entry", "RecoveryError", "RecoveryDiskFull", "default_chunks", "MANIFEST"]

MANIFEST = "manifest.json"
CHUNK_SIDE = 256
#: a write is refused (with a message) when less than this would stay free on the store's disk
FREE_MARGIN_BYTES = 64 * 2**20


class RecoveryError(RuntimeError):
    """The recovery store could not keep an edit; the message says why and what to do."""


class RecoveryDiskFull(RecoveryError):
    """The disk holding the recovery store is (almost) full."""


def default_chunks(shape: Sequence[int]) -> tuple[int, ...]:
    """One plane tile per chunk: (1, ..., 256, 256), so an edit on one slice writes that slice's tiles only."""
    shape = tuple(int(s) for s in shape)
    lead = (1,) * max(0, len(shape) - 2)
    return lead + tuple(max(1, min(CHUNK_SIDE, s)) for s in shape[len(lead):])


def _digest(block: np.ndarray) -> tuple[int, int]:
    """A 64-bit checksum of a chunk (CRC-32 and Adler-32: ~10x faster than a cryptographic hash, and only
    compared with what this process wrote itself, never with untrusted data)."""
    raw = memoryview(np.ascontiguousarray(block)).cast("B")
    return zlib.crc32(raw), zlib.adler32(raw)


def _normalize(region: Any, shape: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """``region`` (ints and unit-step slices, possibly fewer than the axes) -> ((start, stop), ...) per axis."""
    region = () if region is None else (region if isinstance(region, tuple) else (region,))
    if len(region) > len(shape):
        raise ValueError(f"region {region} has more axes than the labels {shape}")
    out = []
    for axis, n in enumerate(shape):
        r = region[axis] if axis < len(region) else slice(None)
        if isinstance(r, slice):
            start, stop, step = r.indices(n)
            if step != 1:
                raise ValueError(f"region {region}: slices must have step 1")
            out.append((start, max(start, stop)))
        else:
            i = int(r) + (n if int(r) < 0 else 0)
            if not 0 <= i < n:
                raise ValueError(f"region {region}: index {r} is outside axis {axis} of size {n}")
            out.append((i, i + 1))
    return tuple(out)


class _Window:
    """``region`` of ``array`` (its full shape), read only where indexed (``[slices]`` relative to the region)."""

    def __init__(self, array: Any, bounds: tuple[tuple[int, int], ...]):
        self.array, self.bounds = array, bounds
        self.shape = tuple(b - a for a, b in bounds)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        return np.asarray(self.array[tuple(slice(a + k.start, a + k.stop) for (a, _), k in zip(self.bounds, key))])


class Entry:
    """An entry folder, opened (see the module docstring). ``info`` is its manifest (a dict)."""

    def __init__(self, folder: Path, manifest: dict, fsync: bool = True):
        self.folder, self.info, self.fsync = Path(folder), manifest, fsync
        self.shape = tuple(int(s) for s in manifest["shape"])
        self.dtype = np.dtype(manifest["dtype"])
        self.chunks = tuple(int(c) for c in manifest["chunks"])
        self._lock = threading.RLock()
        self._index: dict[tuple[int, ...], tuple[int, int]] = {}  # coords -> (generation, file size)
        self._newest_on_disk = 0
        self._broken = ""
        self._digests: dict[tuple[int, ...], tuple[int, int]] = {}  # coords -> digest of the stored chunk (written here)
        self._scan()

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, parent: Path, name: str, shape: Sequence[int], dtype: Any, writer: str = "",
               fsync: bool = True) -> "Entry":
        folder = Path(parent) / uuid.uuid4().hex[:12]
        folder.mkdir(parents=True)
        now = time.time()
        manifest = {"format": 1, "name": str(name), "shape": [int(s) for s in shape], "dtype": np.dtype(dtype).str,
                    "chunks": list(default_chunks(shape)), "generation": 0, "created": now, "updated": now,
                    "writer": writer, "session": current_session(), "released": None, "bytes": 0}
        write_json(folder / MANIFEST, manifest, fsync)
        return cls(folder, manifest, fsync)

    @classmethod
    def load(cls, folder: Path, fsync: bool = True) -> "Entry | None":
        """The entry in ``folder``; None when its manifest is missing or damaged (never a half state)."""
        manifest = read_json(Path(folder) / MANIFEST)
        if manifest is None or manifest.get("format") != 1:
            return None
        try:
            return cls(folder, manifest, fsync)
        except (KeyError, TypeError, ValueError, OSError):
            return None

    def _scan(self) -> None:
        """Index the chunk files of the last complete generation (newer files: an interrupted write)."""
        committed = int(self.info["generation"])
        index: dict[tuple[int, ...], tuple[int, int]] = {}
        newest = 0
        for coords, gen, item in iter_chunk_files(self.folder):
            newest = max(newest, gen)
            if gen <= committed and (coords not in index or index[coords][0] < gen):
                index[coords] = (gen, item.stat().st_size)
        self._index, self._newest_on_disk = index, newest
        self._digests = {}

    @property
    def id(self) -> str:
        return self.folder.name

    @property
    def name(self) -> str:
        return str(self.info["name"])

    @property
    def owned(self) -> bool:
        return self.info.get("session", {}).get("id") == current_session()["id"]

    @property
    def nbytes(self) -> int:
        """Bytes of the chunk files of the last complete state."""
        return sum(size for _, size in self._index.values())

    # ------------------------------------------------------------------ reading
    def _chunk_bounds(self, coords: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(slice(c * s, min((c + 1) * s, n)) for c, s, n in zip(coords, self.chunks, self.shape))

    def _read_chunk(self, coords: tuple[int, ...]) -> np.ndarray:
        shape = tuple(b.stop - b.start for b in self._chunk_bounds(coords))
        found = self._index.get(coords)
        if found is None:
            return np.zeros(shape, self.dtype)
        payload = (self.folder / chunk_name(coords, found[0])).read_bytes()
        return decode_chunk(payload, shape, self.dtype)

    def read_into(self, out: Any) -> Any:
        """Write the entry's labels into ``out`` (an array of its shape, zero-filled), chunk by chunk."""
        with self._lock:
            for coords in sorted(self._index):
                if self._index[coords][1]:  # an empty file is an all-zero chunk
                    out[self._chunk_bounds(coords)] = self._read_chunk(coords)
        return out

    # ------------------------------------------------------------------ writing
    def record(self, region: Any, data: Any, writer: str = "", source: Any = None) -> int:
        """Store ``data`` at ``region`` (ints and slices into the labels; ``data`` has the region's shape, the
        ints' axes dropped, or broadcasts to it; a zarr/dask array is read chunk by chunk). ``source``: instead
        of ``data``, the whole labels array, from which the region is read chunk by chunk. Writes only the
        chunks whose content changed, then makes the new state current in one atomic step (one for the whole
        region, however many chunks and slices it spans). Returns the bytes written (chunk files + manifest)."""
        if not self.owned:
            raise RecoveryError(f"recovery entry {self.name!r} belongs to another session: adopt it first")
        if self._broken:
            raise RecoveryError(self._broken)
        bounds = _normalize(region, self.shape)
        if any(a >= b for a, b in bounds):
            return 0
        region_shape = tuple(b - a for a, b in bounds)
        # an array of the region's shape (numpy, zarr, dask) is read chunk by chunk, never whole
        if source is not None:
            block = _Window(source, bounds)
        elif tuple(getattr(data, "shape", ())) == region_shape and hasattr(data, "__getitem__"):
            block = data
        else:
            block = np.asarray(data)
        if block.shape != region_shape:  # the ints' axes dropped, or a value to broadcast
            block = (block.reshape(region_shape) if block.size == int(np.prod(region_shape))
                     else np.broadcast_to(block, region_shape))
        with self._lock:
            pending = self._changed_chunks(bounds, block)
            if not pending:
                return 0
            return self._commit(pending, writer)

    def _changed_chunks(self, bounds, block) -> list[tuple[tuple[int, ...], bytes, tuple[int, int]]]:
        ranges = [range(a // s, (b - 1) // s + 1) for (a, b), s in zip(bounds, self.chunks)]
        pending = []
        for coords in itertools.product(*ranges):
            cb = self._chunk_bounds(coords)
            inner = tuple(slice(max(c.start, a) - c.start, min(c.stop, b) - c.start) for c, (a, b) in zip(cb, bounds))
            src = tuple(slice(max(c.start, a) - a, min(c.stop, b) - a) for c, (a, b) in zip(cb, bounds))
            whole = all(i.start == 0 and i.stop == c.stop - c.start for i, c in zip(inner, cb))
            part = np.asarray(block[src], dtype=self.dtype)
            if whole and coords not in self._index:
                if not part.any():
                    continue  # still all zero: nothing to store
                new = part
            elif whole and coords in self._digests:  # what is stored is known: no read from the disk
                new = part
                if _digest(new) == self._digests[coords]:
                    continue
            else:
                old = self._read_chunk(coords)
                new = old.copy()
                new[inner] = part
                if np.array_equal(new, old):
                    continue
            pending.append((coords, encode_chunk(new), _digest(new)))
        return pending

    def _commit(self, pending: list[tuple[tuple[int, ...], bytes, tuple[int, int]]], writer: str) -> int:
        generation = max(int(self.info["generation"]), self._newest_on_disk) + 1
        need = sum(len(p) for _, p, _ in pending) + 4096
        self._check_free(need)
        written: list[Path] = []
        try:
            for coords, payload, _ in pending:
                path = self.folder / chunk_name(coords, generation)
                tmp = self.folder / f"{TMP_PREFIX}{path.name}"
                tmp.write_bytes(payload)
                os.replace(tmp, path)
                written.append(path)
            self._newest_on_disk = generation
            if self.fsync:  # on the disk before the manifest names them (a power cut keeps the edit whole too)
                flush_files(written)
            manifest = dict(self.info, generation=generation, updated=time.time(), writer=writer or self.info["writer"],
                            released=None)  # written after a normal end: the session goes on
            index = dict(self._index)
            for coords, payload, _ in pending:
                index[coords] = (generation, len(payload))
            manifest["bytes"] = sum(size for _, size in index.values())
            write_json(self.folder / MANIFEST, manifest, self.fsync)  # the atomic step: now the edit counts
        except OSError as exc:
            self._undo_files(written)
            if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
                raise RecoveryDiskFull(self._disk_full_text()) from exc
            raise RecoveryError(f"recovery store: could not write {self.folder} ({exc}); the labels are still in "
                                f"the layer: save it (File > Save Selected Layers)") from exc
        old, self._index, self.info = self._index, index, manifest
        self._digests.update((coords, digest) for coords, _, digest in pending)
        self._drop_superseded(old, pending)
        return sum(len(p) for _, p, _ in pending) + (self.folder / MANIFEST).stat().st_size

    def _undo_files(self, written: list[Path]) -> None:
        for path in written:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError:  # a file of a failed write would count once a later generation passes it
                self._broken = (f"recovery store: {self.folder} could not be cleaned after a failed write; "
                                f"autosave of {self.name!r} is off: save the layer")

    def _drop_superseded(self, old: dict, pending: list) -> None:
        """Remove the versions the new state replaced (first), then all-zero markers with nothing left below."""
        for coords, payload, _ in pending:
            if coords in old:
                (self.folder / chunk_name(coords, old[coords][0])).unlink(missing_ok=True)
            if not payload:
                gen = self._index[coords][0]
                (self.folder / chunk_name(coords, gen)).unlink(missing_ok=True)
                del self._index[coords]

    def _check_free(self, need: int) -> None:
        try:
            free = shutil.disk_usage(self.folder).free
        except OSError:
            return
        if free < need + FREE_MARGIN_BYTES:
            raise RecoveryDiskFull(self._disk_full_text(free))

    def _disk_full_text(self, free: int | None = None) -> str:
        left = "" if free is None else f" ({free / 2**20:.0f} MB free)"
        return (f"recovery store: the disk holding {self.folder.parent.parent} is full{left}; edits of "
                f"{self.name!r} are no longer autosaved. Save the layer (File > Save Selected Layers), free disk "
                f"space, or point GRANSEG_RECOVERY_DIR at another disk")

    # ------------------------------------------------------------------ ownership
    def update_manifest(self, **changes: Any) -> None:
        """Change manifest fields (name, released, ...) in one atomic step."""
        with self._lock:
            manifest = dict(self.info, **changes)
            write_json(self.folder / MANIFEST, manifest, self.fsync)
            self.info = manifest

    def adopt(self, name: str | None = None) -> None:
        """Make this session the entry's writer (after restoring it), removing files of an interrupted write."""
        with self._lock:
            committed = int(self.info["generation"])
            for coords, gen, item in list(iter_chunk_files(self.folder)):
                if gen > committed or self._index.get(coords, (gen,))[0] != gen:
                    Path(item.path).unlink(missing_ok=True)
            for item in self.folder.iterdir():
                if item.name.startswith(TMP_PREFIX):
                    item.unlink(missing_ok=True)
            self._scan()
            self.update_manifest(session=current_session(), released=None,
                                 **({} if name is None else {"name": str(name)}))

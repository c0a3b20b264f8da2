"""The files of the recovery store: atomic small JSON files and immutable compressed chunk files.

Why this layout (and not a plain zarr array): one commit can touch several chunks, and a crash between two
chunk writes of a zarr array leaves half an edit on disk. Here a chunk is never overwritten: each version is a
new file ``<chunk key>~<generation>``, and an entry's manifest names the last complete generation ``G``. A
reader takes, per chunk, the newest file of generation <= G, so files of a write that never reached its
manifest swap are ignored; the manifest itself is replaced atomically (write a temporary file, flush it,
``os.replace``). Chunks are zlib-compressed C-order bytes; an empty file is an all-zero chunk.
"""
from __future__ import annotations

import json
import os
import uuid
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["write_atomic", "flush_files", "read_json", "write_json", "encode_chunk", "decode_chunk", "chunk_name",
           "parse_chunk_name", "iter_chunk_files", "TMP_PREFIX"]

TMP_PREFIX = ".tmp-"


def _fsync_dir(folder: Path) -> None:
    if os.name == "nt":  # pragma: no cover - directories cannot be opened for fsync on Windows
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def flush_files(paths: list[Path]) -> None:
    """fsync ``paths`` and their folder. Several files are flushed in parallel: the file system then commits
    them in one journal transaction (64 chunk files: 0.03 s instead of 0.5 s one after the other here)."""
    def flush(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    if len(paths) <= 2:
        for p in paths:
            flush(p)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(16, len(paths)), thread_name_prefix="granseg-fsync") as pool:
            list(pool.map(flush, paths))
    if paths:
        _fsync_dir(Path(paths[0]).parent)


def write_atomic(path: Path, payload: bytes, fsync: bool = True) -> None:
    """Write ``payload`` to ``path`` so that ``path`` holds either its old or its new bytes, never a part."""
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    with open(tmp, "wb") as f:
        f.write(payload)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        _fsync_dir(path.parent)


def write_json(path: Path, obj: dict, fsync: bool = True) -> None:
    write_atomic(path, json.dumps(obj, indent=1, sort_keys=True).encode(), fsync)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing or unreadable (a foreign or damaged file)."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def encode_chunk(block: np.ndarray) -> bytes:
    """Compressed bytes of one chunk; b"" for an all-zero chunk."""
    if not block.any():
        return b""
    return zlib.compress(np.ascontiguousarray(block).tobytes(), 1)


def decode_chunk(payload: bytes, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if not payload:
        return np.zeros(shape, dtype)
    return np.frombuffer(zlib.decompress(payload), dtype=dtype).reshape(shape).copy()


def chunk_name(coords: tuple[int, ...], generation: int) -> str:
    return ".".join(str(c) for c in coords) + f"~{generation}"


def parse_chunk_name(name: str) -> tuple[tuple[int, ...], int] | None:
    """(chunk coordinates, generation) of a chunk file name; None for anything else."""
    if name.startswith(".") or "~" not in name:
        return None
    key, _, gen = name.rpartition("~")
    try:
        return tuple(int(c) for c in key.split(".")), int(gen)
    except ValueError:
        return None


def iter_chunk_files(folder: Path) -> Iterator[tuple[tuple[int, ...], int, os.DirEntry]]:
    """(coordinates, generation, dir entry) of every chunk file in ``folder``, in no order."""
    with os.scandir(folder) as it:
        for item in it:
            parsed = parse_chunk_name(item.name)
            if parsed is not None and item.is_file():
                yield parsed[0], parsed[1], item

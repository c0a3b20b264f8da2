"""Image embeddings: compute once per (image, model), reuse for every click and slider move.

Why a cache: the image encoder is ~99% of SAM 2's cost (2-3 s per 1024 px image on a laptop CPU, ~70 ms per
decoder call). Moving the granularity slider or adding a click must never re-encode.

Keys hold everything that determines an embedding and nothing else (:func:`image_key`): the model's weights
(:func:`model_fingerprint`, a hash of the tensors, so a new process loading the same checkpoint finds the
entries of the last one), the config, the device type and precision, the intensity range the pixels were
scaled with, and the pixels themselves. Entries live in an in-memory LRU and, optionally, in a disk folder:
written atomically, read back with ``torch.load(weights_only=True)``, bounded by ``max_bytes`` (least
recently used out; a read touches the file's mtime). An entry that does not load is removed and recomputed;
a folder that cannot be used gives one warning and the cache goes on in memory only. Only files named like
our entries (``<40 hex>.pt``) are ever deleted.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
import warnings
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..io import atomic_path

__all__ = ["EmbeddingCache", "image_key", "model_fingerprint", "Features", "DEFAULT_MAX_BYTES"]

#: {"image_embed": (1, C, h, w), "high_res_feats": [(1, C/8, 4h, 4w), (1, C/4, 2h, 2w)]}
Features = dict
#: disk budget of a cache folder (a 1024 px Hiera model's entry is ~16 MB: ~120 images)
DEFAULT_MAX_BYTES = 2 << 30
_ENTRY = re.compile(r"^[0-9a-f]{40}\.pt$")
#: module -> (its tensors' modification counters when hashed, the hash)
_fingerprints: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()
_fingerprint_lock = threading.Lock()


def _weights_version(module: torch.nn.Module) -> tuple[int, ...]:
    """The in-place modification counters of ``module``'s tensors: any optimizer step, ``load_state_dict`` or
    ``copy_`` into a weight bumps one, at a cost of microseconds to read (no hashing)."""
    return tuple(t._version for t in (*module.parameters(), *module.buffers()))


def model_fingerprint(module: torch.nn.Module) -> str:
    """A hash of ``module``'s weights (parameters and buffers).

    Two processes that load the same checkpoint get the same fingerprint; a different checkpoint, a random
    model or a LoRA merge gets another. Hashing costs about 1 s per GB of weights, so it is done once per
    module and again only after a weight changed in place (training the model the predictor holds): its
    tensors' modification counters tell, so a model trained in place is never served embeddings cached for
    its earlier weights.
    """
    version = _weights_version(module)
    with _fingerprint_lock:
        found = _fingerprints.get(module)
        if found is None or found[0] != version:
            h = hashlib.blake2b(digest_size=16)
            for name, tensor in sorted(module.state_dict().items()):
                t = tensor.detach().reshape(-1).contiguous().cpu()
                h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)}".encode())
                h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            found = _fingerprints[module] = (version, h.hexdigest())
        return found[1]


def image_key(image: np.ndarray, model_tag: str, extra: str = "") -> str:
    """A stable 40-hex key for ``image`` (pixels, shape, dtype) under ``model_tag`` and ``extra``."""
    h = hashlib.blake2b(digest_size=20)
    arr = np.ascontiguousarray(image)
    h.update(str((arr.shape, arr.dtype.str, model_tag, extra)).encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def _valid(feats) -> bool:
    return (isinstance(feats, dict) and isinstance(feats.get("image_embed"), torch.Tensor)
            and isinstance(feats.get("high_res_feats"), list)
            and all(isinstance(f, torch.Tensor) for f in feats["high_res_feats"]))


class EmbeddingCache:
    """Thread-safe LRU of image features, with an optional bounded on-disk second level."""

    def __init__(self, max_items: int = 8, disk_dir: str | Path | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        if max_items < 1:
            raise ValueError(f"cache_size={max_items}: keep at least 1 image's embedding in memory")
        if max_bytes < 0:
            raise ValueError(f"max_bytes={max_bytes}: give the disk budget in bytes (>= 0)")
        self.max_items = max_items
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, Features] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.disk_dir = self._usable(Path(disk_dir)) if disk_dir else None

    # ---------------------------------------------------------------- disk folder
    def _usable(self, folder: Path) -> Path | None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
                raise PermissionError("not a writable folder")
        except OSError as exc:
            self._disable(folder, exc)
            return None
        return folder

    def _disable(self, folder: Path, exc: BaseException) -> None:
        warnings.warn(f"embedding cache folder {folder} cannot be used ({exc}); embeddings are kept in memory "
                      f"only. Give disk_cache_dir a writable folder to keep them between sessions.",
                      RuntimeWarning, stacklevel=3)
        self.disk_dir = None

    def _path(self, key: str) -> Path | None:
        return None if self.disk_dir is None else self.disk_dir / f"{key}.pt"

    # ---------------------------------------------------------------- lookups
    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        path = self._path(key)
        return key in self._items or bool(path is not None and path.is_file())

    def get(self, key: str) -> Features | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        path = self._path(key)
        if path is not None and path.is_file():
            try:
                feats = torch.load(path, map_location="cpu", weights_only=True)
                if not _valid(feats):
                    raise ValueError("not an embedding entry")
            except Exception:  # a corrupt entry is removed and recomputed, never trusted
                path.unlink(missing_ok=True)
            else:
                try:
                    os.utime(path)  # least recently used goes first when the folder is full
                except OSError:
                    pass
                self._put_memory(key, feats)
                self.hits += 1
                return feats
        self.misses += 1
        return None

    def _put_memory(self, key: str, feats: Features) -> None:
        with self._lock:
            self._items[key] = feats
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def put(self, key: str, feats: Features) -> None:
        self._put_memory(key, feats)
        path = self._path(key)
        if path is None:
            return
        cpu = {"image_embed": feats["image_embed"].cpu(), "high_res_feats": [f.cpu() for f in feats["high_res_feats"]]}
        try:
            with atomic_path(path) as tmp:
                torch.save(cpu, tmp)
            self._prune(keep=path)
        except OSError as exc:  # full disk, folder removed or made read-only meanwhile
            self._disable(path.parent, exc)

    def _prune(self, keep: Path) -> None:
        """Delete our least recently used entries until the folder holds at most ``max_bytes``."""
        entries = []
        for p in self.disk_dir.iterdir():  # type: ignore[union-attr]
            if _ENTRY.match(p.name):
                try:
                    st = p.stat()
                except OSError:
                    continue
                entries.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in entries)
        for _, size, p in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            if p == keep:
                continue
            p.unlink(missing_ok=True)
            total -= size

    def get_or_compute(self, key: str, compute: Callable[[], Features]) -> Features:
        feats = self.get(key)
        if feats is None:
            feats = compute()
            self.put(key, feats)
        return feats

    def clear(self) -> None:
        """Forget the in-memory entries (disk entries stay for the next session)."""
        with self._lock:
            self._items.clear()

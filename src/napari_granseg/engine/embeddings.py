"""Image embeddings: compute once per (image, model), reuse for every click and slider move.

Why a cache: the image encoder is ~99% of SAM 2's cost (2-3 s per 1024 px image on a laptop CPU, ~70 ms per
decoder call). Moving the granularity slider or adding a click must never re-encode. Entries are keyed by a
hash of the pixels, the normalisation and the model, kept in an in-memory LRU, and optionally on disk
(atomic writes; read back with ``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..io import atomic_path

__all__ = ["EmbeddingCache", "image_key", "Features"]

#: {"image_embed": (1, C, h, w), "high_res_feats": [(1, C/8, 4h, 4w), (1, C/4, 2h, 2w)]}
Features = dict


def image_key(image: np.ndarray, model_tag: str, extra: str = "") -> str:
    """A stable key for ``image`` (pixels, shape, dtype) under ``model_tag``."""
    h = hashlib.blake2b(digest_size=20)
    arr = np.ascontiguousarray(image)
    h.update(str((arr.shape, arr.dtype.str, model_tag, extra)).encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


class EmbeddingCache:
    """Thread-safe LRU of image features, with an optional on-disk second level."""

    def __init__(self, max_items: int = 8, disk_dir: str | Path | None = None):
        self.max_items = max_items
        self.disk_dir = Path(disk_dir) if disk_dir else None
        self._items: OrderedDict[str, Features] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items or bool(self.disk_dir and (self.disk_dir / f"{key}.pt").is_file())

    def get(self, key: str) -> Features | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        if self.disk_dir is not None:
            path = self.disk_dir / f"{key}.pt"
            if path.is_file():
                try:
                    feats = torch.load(path, map_location="cpu", weights_only=True)
                except Exception:  # a corrupt entry is recomputed, never trusted
                    path.unlink(missing_ok=True)
                else:
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
        if self.disk_dir is not None:
            cpu = {"image_embed": feats["image_embed"].cpu(),
                   "high_res_feats": [f.cpu() for f in feats["high_res_feats"]]}
            with atomic_path(self.disk_dir / f"{key}.pt") as tmp:
                torch.save(cpu, tmp)

    def get_or_compute(self, key: str, compute: Callable[[], Features]) -> Features:
        feats = self.get(key)
        if feats is None:
            feats = compute()
            self.put(key, feats)
        return feats

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

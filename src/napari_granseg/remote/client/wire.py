"""What travels between the laptop and the GPU worker, and how it is packed.

Interaction is limited by round trips and bytes, not by compute, so every payload is packed for its content:

- images go once per image: raw pixels compressed with zlib level 1 (fast; 16-bit microscopy halves or
  better), keyed by a hash of the pixels so that the worker keeps them and a second ``set_image`` of the same
  pixels sends only the key;
- binary masks come back as ``np.packbits`` + zlib level 1 (a 1024 px mask: 1 MB as bool, 131 KB packed,
  1-2 KB compressed; decoding is exact and takes well under a millisecond);
- float arrays (logits, probabilities) and label images come back exactly as they are, zlib level 1.

Only numpy arrays, bytes and plain Python cross the wire: a torch tensor (a bf16 one in particular) in an
actor's reply can leave the call hanging, and the laptop should not need the worker's device to read it.
"""
from __future__ import annotations

import hashlib
import zlib
from typing import Any

import numpy as np

__all__ = ["Missing", "Packed", "pack_array", "unpack_array", "pack_mask", "unpack_mask", "image_digest", "payload_bytes"]

#: zlib level 1: 3-5x faster than the default level for a few percent larger output (masks, uint16 images)
LEVEL = 1

Packed = dict  # {"kind": "array" | "mask", "dtype": str, "shape": tuple, "data": bytes}


class Missing(dict):
    """Reply meaning "I do not hold the image with this key: send its pixels" (the client resends once)."""


def pack_array(array: np.ndarray) -> Packed:
    """An exact, compressed copy of ``array`` (any dtype numpy can rebuild from ``dtype.str``)."""
    arr = np.ascontiguousarray(array)
    if arr.dtype == object:
        raise TypeError("an object array cannot be sent to the worker: pass a numeric numpy array")
    return {"kind": "array", "dtype": arr.dtype.str, "shape": tuple(int(s) for s in arr.shape),
            "data": zlib.compress(memoryview(arr).cast("B"), LEVEL)}


def pack_mask(mask: np.ndarray) -> Packed:
    """A boolean array as bits (8 pixels a byte), then zlib: exact and ~1000x smaller than a bool array."""
    arr = np.asarray(mask, dtype=bool)
    return {"kind": "mask", "dtype": "|b1", "shape": tuple(int(s) for s in arr.shape),
            "data": zlib.compress(np.packbits(arr, axis=None).tobytes(), LEVEL)}


def unpack_array(packed: Packed) -> np.ndarray:
    """The array :func:`pack_array` or :func:`pack_mask` packed (a fresh, writable array)."""
    shape = tuple(packed["shape"])
    raw = zlib.decompress(packed["data"])
    if packed["kind"] == "mask":
        count = int(np.prod(shape, dtype=np.int64))
        return np.unpackbits(np.frombuffer(raw, np.uint8), count=count).reshape(shape).astype(bool)
    return np.frombuffer(raw, dtype=np.dtype(packed["dtype"])).reshape(shape).copy()


unpack_mask = unpack_array


def image_digest(image: np.ndarray) -> str:
    """A key for the pixels, shape and dtype of ``image`` (same pixels -> same key, on any machine)."""
    arr = np.ascontiguousarray(image)
    h = hashlib.blake2b(digest_size=20)
    h.update(str((arr.shape, arr.dtype.str)).encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def payload_bytes(obj: Any) -> int:
    """Bytes of packed data inside ``obj`` (nested dicts/lists/tuples; numpy arrays count their nbytes)."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return len(obj)
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(payload_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(payload_bytes(v) for v in obj)
    return 0

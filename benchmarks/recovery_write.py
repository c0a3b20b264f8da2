"""What one commit costs the recovery store: bytes written to disk and time, against the stack's size.

Each row: a labels stack (a zarr array, never filled: only the chunks touched exist), one commit of a disc of
radius 40 px on a middle slice, recorded as the interactive widget records it (the object's box). Baseline in
the same run: the same disc written into a plain zarr array of the same chunking (not atomic across chunks,
no manifest), and the bytes a whole-layer save would write (the layer's size). Five commits per row at
different places; time = median. ``fsync`` on (the default: the edit survives a power cut too) and off.

    python benchmarks/recovery_write.py [--out results/recovery_write.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_report  # noqa: E402

SHAPES = [(1, 2048, 2048), (16, 1024, 1024), (64, 2048, 2048), (256, 4096, 4096)]


def _disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _disc(z: int, k: int, shape) -> tuple[tuple, np.ndarray]:
    r = 40
    cy, cx = (shape[1] // 6) * (1 + k % 5), (shape[2] // 3)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    box = (z, slice(cy - r, cy + r + 1), slice(cx - r, cx + r + 1))
    return box, ((yy ** 2 + xx ** 2) <= r * r).astype(np.int32) * (k + 1)


def run(shape, fsync: bool) -> dict:
    import zarr

    from napari_granseg.recovery import RecoverySettings, RecoveryStore

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "recovery"
        settings = RecoverySettings(root=root, fsync=fsync)
        store = RecoveryStore.open_for(np.arange(16, dtype=np.uint16).reshape(4, 4), shape=shape, dtype=np.int32,
                                       settings=settings)
        plain = zarr.create_array(store=str(Path(tmp) / "plain.zarr"), shape=shape, chunks=(1, 256, 256),
                                  dtype="int32", fill_value=0)
        times, sizes, plain_times, plain_sizes = [], [], [], []
        for k in range(5):
            box, disc = _disc(shape[0] // 2, k, shape)
            before = _disk_bytes(root)
            t0 = time.perf_counter()
            store.record("granseg labels", box, disc, "interactive commit")
            times.append(time.perf_counter() - t0)
            sizes.append(_disk_bytes(root) - before)
            before = _disk_bytes(Path(tmp) / "plain.zarr")
            t0 = time.perf_counter()
            plain[box] = disc
            plain_times.append(time.perf_counter() - t0)
            plain_sizes.append(_disk_bytes(Path(tmp) / "plain.zarr") - before)
    return {"stack": "x".join(map(str, shape)), "stack_MiB": int(np.prod(shape)) * 4 / 2**20, "fsync": fsync,
            "commit_bytes_on_disk_median": statistics.median(sizes), "commit_ms_median":
            1e3 * statistics.median(times), "plain_zarr_bytes_median": statistics.median(plain_sizes),
            "plain_zarr_ms_median": 1e3 * statistics.median(plain_times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = [run(shape, fsync) for shape in SHAPES for fsync in (True, False)]
    write_report("recovery_write", rows, ["stack", "stack_MiB", "fsync", "commit_bytes_on_disk_median",
                                          "commit_ms_median", "plain_zarr_bytes_median", "plain_zarr_ms_median"],
                 args.out, {"note": "bytes: growth of the store folder per commit (a replaced chunk version is "
                                    "removed, so a commit over an object already stored adds ~0); machine load: "
                                    f"{os.getloadavg()[0]:.1f}"})


if __name__ == "__main__":
    main()

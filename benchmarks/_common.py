"""Shared helpers for benchmarks: timing with warm-up and repeats, peak memory, table + JSON output."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
import tracemalloc
from pathlib import Path
from typing import Callable

import torch


def timeit(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> dict:
    """Median and min wall time (s) of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": len(times)}


def peak_memory(fn: Callable[[], object]) -> dict:
    """Peak Python-heap bytes (tracemalloc) and, on CUDA, peak allocated GPU bytes of one call."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out = {"peak_host_mb": peak / 2**20}
    if torch.cuda.is_available():
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def environment() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "machine": platform.machine(), "nproc": os.cpu_count()}


def write_report(name: str, rows: list[dict], columns: list[str], out: str | None, extra: dict | None = None) -> Path:
    """Print a markdown table and write JSON (atomically) to ``out`` or benchmarks/results/<name>.json."""
    from napari_granseg.io import atomic_write_bytes

    header = "| " + " | ".join(columns) + " |"
    print(header)
    print("|" + "|".join("---" for _ in columns) + "|")
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        print("| " + " | ".join(cells) + " |")
    path = Path(out) if out else Path(__file__).parent / "results" / f"{name}.json"
    payload = {"benchmark": name, "environment": environment(), "rows": rows, **(extra or {})}
    atomic_write_bytes(path, json.dumps(payload, indent=2, default=str).encode())
    print(f"\nwrote {path}")
    return path

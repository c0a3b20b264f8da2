"""Peak memory and time per slice of the stack engines on zarr stacks of growing length (out-of-core check).

Each configuration (engine x stack length) runs in a FRESH Python process, so its peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own; the tracemalloc peak (Python heap and numpy
buffers, started after the model is loaded) is reported next to it. The stacks are uint16 zarr arrays chunked
one slice per chunk, opened lazily (``napari_granseg.io.open_stack``, dask); labels go to a zarr store on disk.
An engine that held the stack (or its labels) in memory would grow with the stack length: the check is that
peak memory of the long stack is within 10 % of the short one's.

Engines (the bundled demo models, so this runs on a laptop CPU in minutes):
  everything  ``engine.automatic.segment_everything_stack(pred, stack, out=zarr)`` (points_per_side 8)
  fewshot     ``FewShotSegmenter.segment_many(stack)`` (sansa-demo, one reference), masks written per slice

    python benchmarks/out_of_core.py                      # 100 and 1000 slices of 64 x 64, both engines
    python benchmarks/out_of_core.py --lengths 100 1000 --size 128 --engines fewshot
    python benchmarks/out_of_core.py --process 30      # 30 evenly spaced slices of each stack (slow CPU)
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ENGINES = ("fewshot", "everything")


def write_stack(path: Path, n: int, size: int) -> None:
    """A uint16 zarr stack of nested-cell scenes (a few distinct scenes repeated), written slice by slice."""
    import zarr

    from napari_granseg.synthetic import nested_cells_scene

    scenes = [nested_cells_scene(size=size, n_cells=2, seed=s).image.astype(np.uint16) for s in range(8)]
    arr = zarr.create_array(store=str(path), shape=(n, size, size), chunks=(1, size, size), dtype="uint16")
    for i in range(n):
        arr[i] = scenes[i % len(scenes)]


class _Rows:
    """``out[k] = labels`` lands on slice ``picks[k]`` of the full-length labels array."""

    def __init__(self, out, picks):
        self.out, self.picks = out, picks

    def __setitem__(self, k, value):
        self.out[int(self.picks[k])] = value


def run_child(engine: str, stack_path: str, out_path: str, threads: int, process: int | None = None) -> dict:
    """One configuration, in this (fresh) process: load, then run the engine over the lazy stack.

    ``process``: segment only this many evenly spaced slices of the stack (a lazy view of them, still read one
    at a time; the intensity range is sampled from the whole stack and labels go to a full-length store)."""
    import torch
    import zarr

    import napari_granseg as gs
    from napari_granseg.io import open_stack

    torch.set_num_threads(threads)
    stack = open_stack(stack_path)
    n, h, w = stack.shape
    out = zarr.create_array(store=out_path, shape=(n, h, w), chunks=(1, h, w), dtype="int32", fill_value=0)
    picks = np.unique(np.linspace(0, n - 1, num=min(n, process or n)).round().astype(int))
    work = stack if len(picks) == n else stack[picks]
    rows = out if len(picks) == n else _Rows(out, picks)
    if engine == "everything":
        from napari_granseg.engine.automatic import segment_everything_stack
        from napari_granseg.engine.interactive import GranularityPredictor
        from napari_granseg.engine.normalize import stack_intensity_range

        pred = GranularityPredictor(gs.load_model("unsamv2-demo", device="cpu"), precision="fp32")

        def run():
            segment_everything_stack(pred, work, granularity=1.0, points_per_side=8, out=rows,
                                     intensity=stack_intensity_range(stack))
    else:
        from napari_granseg.engine.fewshot import FewShotSegmenter
        from napari_granseg.synthetic import shapes_scene

        fs = FewShotSegmenter(gs.load_model("sansa-demo", device="cpu"), image_size=None, precision="fp32")
        ref, lab = shapes_scene(size=h, n_objects=4, seed=1)
        fs.add_reference(ref, mask=lab == 1)

        def run():
            for k, result in enumerate(fs.segment_many(work)):
                rows[k] = result.mask.astype(np.int32)

    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    t0 = time.perf_counter()
    run()
    seconds = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    labelled = sum(bool(np.asarray(out[int(i)]).any()) for i in picks[:: max(1, len(picks) // 20)])
    return {"engine": engine, "slices": n, "processed": len(picks), "slice_px": f"{h}x{w}",
            "seconds": round(seconds, 2), "ms_per_slice": round(1000 * seconds / len(picks), 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_after_load_mb": round(rss_loaded, 1), "tracemalloc_peak_mb": round(traced_peak / 2**20, 2),
            "sampled_slices_with_labels": labelled}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--size", type=int, default=64, help="slice height and width in pixels")
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--process", type=int, default=None, metavar="K",
                    help="segment only K evenly spaced slices of each stack (a slow CPU); default: all")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/out_of_core.json)")
    ap.add_argument("--child", nargs=3, metavar=("ENGINE", "STACK", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(*args.child, threads=args.threads, process=args.process)))
        return 0

    sys.path.insert(0, str(Path(__file__).parent))
    from _common import environment, write_report

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.lengths:
            stack = Path(tmp) / f"stack_{n}.zarr"
            write_stack(stack, n, args.size)
            for engine in args.engines:
                cmd = [sys.executable, __file__, "--threads", str(args.threads),
                       *(["--process", str(args.process)] if args.process else []), "--child", engine, str(stack),
                       str(Path(tmp) / f"labels_{engine}_{n}.zarr")]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(done.stderr, file=sys.stderr)
                    return 1
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
    verdict = {}
    for engine in args.engines:
        by_n = {r["slices"]: r for r in rows if r["engine"] == engine}
        short, long = by_n[min(by_n)], by_n[max(by_n)]
        growth = long["peak_rss_mb"] / short["peak_rss_mb"] - 1
        verdict[engine] = {"rss_growth": round(growth, 4), "traced_growth_mb": round(
            long["tracemalloc_peak_mb"] - short["tracemalloc_peak_mb"], 2), "within_10_percent": abs(growth) < 0.10}
        for r in rows:
            if r["engine"] == engine:
                r["rss_vs_shortest"] = f"{100 * (r['peak_rss_mb'] / short['peak_rss_mb'] - 1):+.1f}%"
    columns = ["engine", "slices", "processed", "slice_px", "seconds", "ms_per_slice", "peak_rss_mb", "rss_vs_shortest",
               "tracemalloc_peak_mb", "rss_after_load_mb", "sampled_slices_with_labels"]
    write_report("out_of_core", rows, columns, args.out, extra={"verdict": verdict, "environment": environment()})
    print(json.dumps(verdict, indent=1))
    return 0 if all(v["within_10_percent"] for v in verdict.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Slider-update round trip: the predictor in this process vs the same predictor behind a dask actor.

What a user feels when moving the granularity slider with the model on a GPU worker: one click, then a sweep
of g values, each a ``predict`` on the cached embedding. Measured in one run, on one image, with the same
model and the same number of torch threads on both sides (the worker uses one thread, as dask sets
OMP_NUM_THREADS=1 in workers; this process is set to match):

1. local ``GranularityPredictor.predict`` (the baseline, measured alongside);
2. ``RemotePredictor.predict(..., low_res=False)`` (the slider's call: masks only, packed bits);
3. ``RemotePredictor.predict`` with the low-res logits too (what ``predict`` returns by default);
4. an empty actor call (the transport alone);
Also the worker's own predict + packing time per reply (the rest of the round trip is transport).
5. a burst of slider values sent through ``LatestOnly`` vs all of them queued: time from the last value
   to its mask on screen.

Bytes per reply are the packed payload sizes; the full bool mask would be H*W bytes.

Usage: python benchmarks/remote_latency.py [--scheduler tcp://127.0.0.1:8786] [--size 1024] [--repeats 40]
Without --scheduler a LocalCluster (one worker process on 127.0.0.1) is started and closed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_report  # noqa: E402


def _stats(times: list[float]) -> dict:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"median_ms": 1e3 * statistics.median(times), "p95_ms": 1e3 * p95, "runs": len(times)}


def _timed(fn, values) -> list[float]:
    times = []
    for v in values:
        t0 = time.perf_counter()
        fn(v)
        times.append(time.perf_counter() - t0)
    return times


def _burst(submit_all, n: int, gap_s: float) -> float:
    """Seconds from the last of ``n`` slider values (one every ``gap_s``) until its result arrived."""
    done = threading.Event()
    last_sent = [0.0]
    submit_all(n, gap_s, last_sent, done)
    done.wait(120)
    return time.perf_counter() - last_sent[0]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scheduler", default=None, help="a running scheduler (default: start a LocalCluster)")
    ap.add_argument("--model", default="unsamv2-demo")
    ap.add_argument("--size", type=int, default=1024, help="test image side (pixels)")
    ap.add_argument("--repeats", type=int, default=40, help="slider values per measurement")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    import napari_granseg as gs
    from napari_granseg import remote
    from napari_granseg.synthetic import nested_cells_scene

    cluster = None
    if args.scheduler is None:
        from dask.distributed import LocalCluster

        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
    address = args.scheduler or cluster.scheduler_address
    try:
        session = remote.connect(address, timeout=30)
        scene = nested_cells_scene(size=args.size, n_cells=3, seed=0)
        row, col = scene.centers[0]
        click = [[col, row]]
        values = [round(0.1 + 0.9 * i / max(1, args.repeats - 1), 3) for i in range(args.repeats)]

        far = session.predictor(args.model)
        info = far.info()
        torch.set_num_threads(int(info["torch_threads"]))
        near = gs.GranularityPredictor(gs.load_model(args.model, device=info["device"]))
        near.set_image(scene.image)
        t0 = time.perf_counter()
        far.set_image(scene.image)
        first_set = time.perf_counter() - t0
        t0 = time.perf_counter()
        far.set_image(scene.image)
        second_set = time.perf_counter() - t0

        def local(g):
            return near.predict(click, [1], granularity=g)

        def slider(g):
            return far.predict(click, [1], granularity=g, low_res=False)

        def full(g):
            return far.predict(click, [1], granularity=g)

        for fn in (local, slider, full):  # warm-up
            fn(0.5)
        rows = []
        for name, fn in (("local predict (baseline)", local), ("actor predict, masks only (slider)", slider),
                         ("actor predict + low-res logits", full)):
            before = dict(far.stats)
            worker = []

            def run(g, fn=fn):
                fn(g)
                if fn is not local:
                    worker.append(far.last_timing["predict_s"] + far.last_timing["pack_s"])

            times = _timed(run, values)
            calls = far.stats["calls"] - before["calls"]
            reply = (far.stats["reply_bytes"] - before["reply_bytes"]) / calls if calls else 0.0
            rows.append({"path": name, **_stats(times), "bytes_per_reply": reply,
                         "worker_compute_ms": 1e3 * statistics.median(worker) if worker else float("nan")})
        handle = far.handle
        empty = _timed(lambda _: handle.actor.progress("").result(timeout=30), values)
        rows.append({"path": "empty actor call (transport)", **_stats(empty), "bytes_per_reply": 0.0})

        # a fast slider drag: 20 values 5 ms apart, then wait for the last one's mask
        def with_latest(n, gap, last_sent, done):
            latest = remote.LatestOnly(slider, on_result=lambda v, r: done.set() if v == values[n - 1] else None)
            for v in values[:n]:
                latest.submit(v)
                last_sent[0] = time.perf_counter()
                time.sleep(gap)
            last_sent[0] -= gap
            threading.Thread(target=lambda: (done.wait(120), latest.close(5)), daemon=True).start()

        def queued(n, gap, last_sent, done):
            futures = []
            for v in values[:n]:
                futures.append(handle.actor.predict({"point_coords": np.array(click), "point_labels": np.array([1]),
                                                     "granularity": v}, False))
                last_sent[0] = time.perf_counter()
                time.sleep(gap)
            last_sent[0] -= gap
            for f in futures:
                f.result(timeout=120)
            done.set()

        burst = {"latest_only_ms": 1e3 * _burst(with_latest, 20, 0.005),
                 "all_queued_ms": 1e3 * _burst(queued, 20, 0.005)}
        mask_bool_bytes = args.size * args.size
        extra = {"model": info["name"], "device": info["device"], "image_px": args.size,
                 "torch_threads": info["torch_threads"], "scheduler": address if args.scheduler else "LocalCluster",
                 "first_set_image_s": first_set, "second_set_image_same_pixels_s": second_set,
                 "image_bytes_sent": far.stats["image_bytes_sent"], "images_sent": far.stats["images_sent"],
                 "bool_mask_bytes": mask_bool_bytes, "packbits_bytes": mask_bool_bytes // 8,
                 "slider_burst_20_values_5ms_apart": burst}
        write_report(f"remote_latency_{info['device']}_{args.size}", rows,
                     ["path", "median_ms", "p95_ms", "worker_compute_ms", "runs", "bytes_per_reply"], args.out, extra)
        print(f"\nimage {args.size} px: first set_image {first_set:.3f} s ({far.stats['image_bytes_sent']} bytes "
              f"sent), same pixels again {1e3 * second_set:.1f} ms (nothing sent); bool mask {mask_bool_bytes} B, "
              f"packbits {mask_bool_bytes // 8} B")
        print(f"20 slider values 5 ms apart, last value to its mask: LatestOnly {burst['latest_only_ms']:.0f} ms, "
              f"all queued {burst['all_queued_ms']:.0f} ms")
    finally:
        remote.close_all()
        if cluster is not None:
            cluster.close()


if __name__ == "__main__":
    main()

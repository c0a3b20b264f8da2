"""Batch throughput: images/s of ``run_folder`` in one process vs. a dask.distributed LocalCluster of N workers.

Same images, same job, same model weights (a checkpoint both paths load), outputs compared for equality.
The single-process run is the baseline measured in the same run. Cluster start-up is timed separately and
not counted in the cluster's images/s (a long batch pays it once).

    python benchmarks/batch_throughput.py                       # tiny model, 16 images of 256 px, 2 workers
    python benchmarks/batch_throughput.py --config configs/sam2.1/sam2.1_hiera_s.yaml --n 32 --mode whole
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _make_images(folder: Path, n: int, size: int) -> None:
    import tifffile

    from napari_granseg.synthetic import nested_cells_scene

    folder.mkdir(parents=True, exist_ok=True)
    lines = ["image,row,col,granularity"]
    for i in range(n):
        scene = nested_cells_scene(size=size, n_cells=3, seed=1000 + i)
        tifffile.imwrite(folder / f"img_{i:04d}.tif", scene.image)
        lines += [f"img_{i:04d}.tif,{r:.1f},{c:.1f},{g}" for (r, c), g in zip(scene.centers, (0.3, 0.6, 1.0))]
    (folder / "prompts.csv").write_text("\n".join(lines) + "\n")


def _clear_embedding_caches() -> None:
    from napari_granseg import api

    api.release_models()  # predictors (and their embeddings) go with the models the API loaded


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16, help="number of images")
    ap.add_argument("--size", type=int, default=256, help="image size (px)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mode", choices=("prompts", "whole"), default="prompts")
    ap.add_argument("--points-per-side", type=int, default=8, help="whole mode: grid size")
    ap.add_argument("--config", default="granseg_tiny.yaml", help="model config (random weights, saved once)")
    ap.add_argument("--checkpoint", default=None, help="use this UnSAMv2 checkpoint instead of random weights")
    ap.add_argument("--out", default="benchmarks/results/batch_throughput.json")
    args = ap.parse_args(argv)

    import torch

    import napari_granseg as gs
    from napari_granseg.batch import Job, ModelRef, close_client, make_client, run_folder
    from napari_granseg.checkpoints import save_checkpoint

    work = Path(tempfile.mkdtemp(prefix="granseg_bench_"))
    try:
        images = work / "images"
        _make_images(images, args.n, args.size)
        ckpt = args.checkpoint
        if ckpt is None:
            torch.manual_seed(0)
            model = gs.load_model(None, kind="unsamv2", config=args.config, device="cpu")
            ckpt = str(save_checkpoint(model.module.state_dict(), work / "model.pt"))
            del model
        ref = ModelRef(ckpt, kind="unsamv2", config=args.config, device="cpu")
        settings = {"points_per_side": args.points_per_side} if args.mode == "whole" else {}
        job = Job(mode=args.mode, granularity=0.5, model=ref, settings=settings,
                  prompts=str(images / "prompts.csv") if args.mode == "prompts" else None)

        # warm-up (model load, first-call overheads) on one image, not timed
        run_folder([images / "img_0000.tif"], work / "warm", job, progress=False)
        _clear_embedding_caches()  # every timed run starts with no cached embeddings (as the workers do)
        t0 = time.perf_counter()
        single = run_folder(images, work / "single", job, progress=False)
        t_single = time.perf_counter() - t0

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # second baseline: one process, one thread (what each worker gets)
        try:
            _clear_embedding_caches()
            t0 = time.perf_counter()
            single1 = run_folder(images, work / "single1", job, progress=False)
            t_single1 = time.perf_counter() - t0
        finally:
            torch.set_num_threads(threads)

        t0 = time.perf_counter()
        client, _ = make_client(workers=args.workers)
        client.run(lambda: None)
        t_start = time.perf_counter() - t0
        try:
            run_folder([images / "img_0000.tif"], work / "warm_cluster", job, progress=False, client=client)
            t0 = time.perf_counter()
            multi = run_folder(images, work / "multi", job, progress=False, client=client)
            t_multi = time.perf_counter() - t0
        finally:
            close_client(client)

        import tifffile

        same = all(np.array_equal(tifffile.imread(p), tifffile.imread(work / "multi" / p.name))
                   for p in sorted((work / "single").glob("*_labels.tif")))
        result = {
            "machine": {"cpus": os.cpu_count(), "torch_threads_single": torch.get_num_threads(),
                        "platform": platform.platform(), "torch": torch.__version__},
            "config": vars(args),
            "single": {"images": len(single.done), "seconds": t_single, "images_per_s": len(single.done) / t_single},
            "single_1thread": {"images": len(single1.done), "seconds": t_single1,
                               "images_per_s": len(single1.done) / t_single1},
            "cluster": {"workers": args.workers, "images": len(multi.done), "seconds": t_multi,
                        "images_per_s": len(multi.done) / t_multi, "startup_s": t_start},
            "identical_labels": bool(same),
        }
        result["speedup"] = result["cluster"]["images_per_s"] / result["single"]["images_per_s"]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nBatch throughput ({args.mode}, {args.n} images {args.size}px, config {args.config}, "
          f"{os.cpu_count()} CPUs)\n")
    print("| run | images | seconds | images/s |")
    print("|---|---:|---:|---:|")
    print(f"| single process ({result['machine']['torch_threads_single']} torch threads) | {result['single']['images']} "
          f"| {t_single:.1f} | {result['single']['images_per_s']:.2f} |")
    print(f"| single process (1 torch thread) | {result['single_1thread']['images']} | {t_single1:.1f} | "
          f"{result['single_1thread']['images_per_s']:.2f} |")
    print(f"| LocalCluster {args.workers} workers x 1 thread | {result['cluster']['images']} | {t_multi:.1f} | "
          f"{result['cluster']['images_per_s']:.2f} |")
    print(f"\nspeed-up {result['speedup']:.2f}x; cluster start-up {t_start:.1f} s (not counted); "
          f"identical labels: {result['identical_labels']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()

"""Few-shot series: reused reference memory (FewShotSegmenter.segment) vs upstream's per-target episode
(references re-encoded for every target, granseg_training.sansa.episodes.segment_episode_reference), same
weights, same run.

Reports per-target time, speed-up (target: >= (k+1)/1.2 x) and peak memory (psutil RSS growth on CPU,
torch.cuda.max_memory_allocated on GPU) for k = 1 and 5 references over a 20-slice series.

    python benchmarks/fewshot_reuse.py                                    # granseg_tiny, 256 px, CPU
    python benchmarks/fewshot_reuse.py --config configs/sam2/sam2_hiera_t.yaml --slices 6 --device cuda
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch


def _rss_mb() -> float:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def _measure(fn, targets, device) -> dict:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    for t in targets:
        fn(t)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    out = {"per_target_s": dt / len(targets), "rss_growth_mb": max(0.0, _rss_mb() - rss0)}
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="granseg_tiny.yaml")
    p.add_argument("--slices", type=int, default=20)
    p.add_argument("--refs", type=int, nargs="+", default=[1, 5])
    p.add_argument("--size", type=int, default=256, help="slice size in pixels")
    p.add_argument("--image-size", type=int, default=0, help="upstream square pre-resize (0: none)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="the engine's precision setting (napari_granseg.devices); both paths alike")
    p.add_argument("--out", default="benchmarks/results/fewshot_reuse.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from granseg_training.sansa.episodes import segment_episode_reference
    from napari_granseg.engine.fewshot import FewShotSegmenter
    from napari_granseg.models.sansa import build_sansa_model
    from napari_granseg.synthetic import shapes_scene

    device = torch.device(args.device)
    model = build_sansa_model(args.config, device=device)
    with torch.no_grad():  # non-zero adapters, so they cost what they cost
        for a in model.adapters().values():
            a.up_proj.weight.normal_(0, 0.02)
    rng = np.random.default_rng(0)
    series = [shapes_scene(size=args.size, n_objects=4, rng=rng) for _ in range(args.slices)]
    rows = []
    for k in args.refs:
        fs = FewShotSegmenter(model, image_size=args.image_size or None, precision=args.precision)
        for img, lab in series[:k]:
            fs.add_reference(img, mask=lab == 1)
        targets = [s[0] for s in series[k:]]
        fs.segment(targets[0])
        segment_episode_reference(fs, targets[0], batch_backbone=True)  # warm-up both paths
        fs.clear_references()
        for img, lab in series[:k]:
            fs.add_reference(img, mask=lab == 1)
        t0 = time.perf_counter()
        fs.memory()
        memory_s = time.perf_counter() - t0
        reuse = _measure(fs.segment, targets, device)
        upstream = _measure(lambda t: segment_episode_reference(fs, t, batch_backbone=True), targets, device)
        diff = max(float(np.abs(fs.segment(t).logits - segment_episode_reference(fs, t).logits).max())
                   for t in targets[:3])
        rows.append({"refs": k, "targets": len(targets), "memory_build_s": memory_s,
                     "reuse": reuse, "upstream": upstream,
                     "speedup": upstream["per_target_s"] / reuse["per_target_s"],
                     "target_speedup": (k + 1) / 1.2, "max_logit_diff_vs_episode": diff})
    result = {"config": args.config, "device": str(device), "precision": args.precision,
              "threads": args.threads, "slice_size": args.size,
              "model_size": model.image_size, "platform": platform.platform(), "torch": torch.__version__,
              "rows": rows}
    print(f"\nFew-shot reuse, {args.config} ({model.image_size} px), {args.slices} slices, {device}, "
          f"{args.threads} threads, precision {args.precision}\n")
    print("| refs | targets | reuse s/target | upstream s/target | speed-up | target | RSS growth MB (reuse / upstream) | max |dlogit| |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        mem = f"{r['reuse']['rss_growth_mb']:.0f} / {r['upstream']['rss_growth_mb']:.0f}"
        if "peak_cuda_mb" in r["reuse"]:
            mem += f" (CUDA peak {r['reuse']['peak_cuda_mb']:.0f} / {r['upstream']['peak_cuda_mb']:.0f})"
        print(f"| {r['refs']} | {r['targets']} | {r['reuse']['per_target_s']:.4f} | {r['upstream']['per_target_s']:.4f} "
              f"| {r['speedup']:.2f}x | {r['target_speedup']:.2f}x | {mem} | {r['max_logit_diff_vs_episode']:.1e} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()

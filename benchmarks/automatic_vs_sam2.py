"""Our whole-image generator vs sam2's ``SAM2AutomaticMaskGenerator``, same run.

Same weights (a stock SAM 2 model holding the UnSAMv2 model's base weights), same image, same grid and
settings (UnSAMv2's whole-image settings by default: M2M on, mask threshold -1, stability offset 0.7), and the
same arithmetic: our runs use ``precision="fp32"`` (no autocast), as sam2's generator computes in float32.
Measured: wall time (median of --repeats, each after a warm-up) and peak memory (tracemalloc host heap,
torch.cuda.max_memory_allocated on CUDA) of
1. sam2's generator (encodes the image on every call, as it does),
2. ours, stock model, cold (embedding cache cleared: encoder included)  -> "identical masks" is checked here
3. ours, stock model, warm (embedding cached, as for a second g or a re-run)
4. ours, UnSAMv2 granularity path (one mask per point), warm, at --granularity;
5. the same with ``precision="auto"`` (bf16 where it is faster), with its mean best mask IoU against 4.
Identity: both engines get the same embedding (ours is seeded with the features sam2's predictor computed,
so that preprocessing differences cannot hide in the comparison; the max feature difference is reported).

Usage: python benchmarks/automatic_vs_sam2.py [--config configs/sam2.1/sam2.1_hiera_t.yaml --size 1024
       --points-per-side 32] [--checkpoint unsamv2.pt] [--device cuda]
Default: the tiny test config (random weights), a 256 px image, 16 points per side (a few minutes on a CPU).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import peak_memory, timeit, write_report  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="granseg_tiny.yaml")
    ap.add_argument("--checkpoint", default=None, help="UnSAMv2 checkpoint (default: random weights)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=256, help="test image side (pixels)")
    ap.add_argument("--points-per-side", type=int, default=16)
    ap.add_argument("--points-per-batch", type=int, default=64)
    ap.add_argument("--granularity", type=float, default=0.3)
    ap.add_argument("--no-m2m", action="store_true")
    ap.add_argument("--pred-iou-thresh", type=float, default=None,
                    help="default: the median predicted IoU of an unfiltered run (so the filter is active)")
    ap.add_argument("--stability-thresh", type=float, default=None, help="default: median, as above")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    import napari_granseg as gs
    from napari_granseg.engine.automatic import AutomaticSettings, generate
    from napari_granseg.engine.embeddings import image_key
    from napari_granseg.engine.normalize import check_image
    from napari_granseg.synthetic import nested_cells_scene

    torch.manual_seed(0)
    model = gs.load_model(args.checkpoint, kind="unsamv2", config=args.config, device=args.device)
    stock = gs.load_model(None, kind="sam2", config=args.config, device=args.device)
    stock.module.load_state_dict(model.module.state_dict(), strict=False)
    device = model.device
    scene = nested_cells_scene(size=args.size, n_cells=4, seed=0)
    img8 = (np.clip(scene.image / np.percentile(scene.image, 99.5), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(img8[..., None], 3, axis=-1)

    ours = gs.GranularityPredictor(stock, precision="fp32", cache_size=2)
    base = dict(points_per_side=args.points_per_side, points_per_batch=args.points_per_batch, mask_threshold=-1.0,
                stability_score_offset=0.7, box_nms_thresh=0.7, crop_n_layers=0, use_m2m=not args.no_m2m)
    iou_t, stab_t = args.pred_iou_thresh, args.stability_thresh
    if iou_t is None or stab_t is None:
        probe = dict(base, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                     points_per_side=min(args.points_per_side, 8))
        raw = generate(ours, rgb, None, AutomaticSettings(**probe), precision="fp32")
        iou_t = float(np.median([r["predicted_iou"] for r in raw])) if iou_t is None else iou_t
        stab_t = float(np.median([r["stability_score"] for r in raw])) if stab_t is None else stab_t
    kw = dict(base, pred_iou_thresh=iou_t, stability_score_thresh=stab_t)
    settings = AutomaticSettings(**kw)
    gen = SAM2AutomaticMaskGenerator(stock.module, **kw)
    gen.predictor._bb_feat_sizes = ours._bb_feat_sizes  # sam2 hard-codes 1024 px feature sizes

    # identity: seed our cache with sam2's own features for this image
    with torch.inference_mode():
        gen.predictor.set_image(rgb)
    theirs_feats = {"image_embed": gen.predictor._features["image_embed"].clone(),
                    "high_res_feats": [f.clone() for f in gen.predictor._features["high_res_feats"]]}
    ours.set_image(rgb)
    feat_diff = float((ours._features["image_embed"] - theirs_feats["image_embed"]).abs().max())
    key = image_key(check_image(rgb), ours._model_tag, str(ours.percentiles))
    ours.cache.put(key, theirs_feats)
    with torch.inference_mode():
        ref = gen.generate(rgb)
    mine = generate(ours, rgb, None, settings, precision="fp32")
    identical = len(ref) == len(mine) and all(
        np.array_equal(a["segmentation"], b["segmentation"]) and a["bbox"] == b["bbox"]
        and a["predicted_iou"] == b["predicted_iou"] for a, b in zip(ref, mine))

    def run_sam2():
        with torch.inference_mode():
            gen.generate(rgb)

    def run_cold():
        ours.cache.clear()
        generate(ours, rgb, None, settings, precision="fp32")

    def run_warm():
        generate(ours, rgb, None, settings, precision="fp32")

    gran = gs.GranularityPredictor(model, precision="fp32", cache_size=2)
    gset = settings
    n_gran = len(generate(gran, rgb, args.granularity, gset, precision="fp32"))

    def run_gran():
        generate(gran, rgb, args.granularity, gset, precision="fp32")

    def run_gran_auto():
        generate(gran, rgb, args.granularity, gset, precision="auto")

    # agreement of the fast path with float32: best mask IoU of each float32 mask among the "auto" masks
    exact = generate(gran, rgb, args.granularity, gset, precision="fp32")
    fast = generate(gran, rgb, args.granularity, gset, precision="auto")
    auto_iou = _mean_best_iou(exact, fast)

    rows = []
    t_ref = timeit(run_sam2, repeats=args.repeats)
    for name, fn, n in (("sam2 SAM2AutomaticMaskGenerator", run_sam2, len(ref)),
                        ("ours, stock model, cold (encoder included)", run_cold, len(mine)),
                        ("ours, stock model, warm (cached embedding)", run_warm, len(mine)),
                        (f"ours, UnSAMv2 g={args.granularity}, warm", run_gran, n_gran),
                        (f"ours, UnSAMv2 g={args.granularity}, warm, precision auto", run_gran_auto, len(fast))):
        t = t_ref if fn is run_sam2 else timeit(fn, repeats=args.repeats)
        mem = peak_memory(fn)
        rows.append({"engine": name, "median_s": t["median_s"], "ratio_vs_sam2": t["median_s"] / t_ref["median_s"],
                     "masks": n, **{k: v for k, v in mem.items()}})
    for r in rows[1:3]:
        r["identical_masks"] = identical
    rows[-1]["mask_iou_vs_fp32"] = auto_iou
    print(f"\nconfig {args.config}, image {args.size}x{args.size}, grid {args.points_per_side}^2, batch "
          f"{args.points_per_batch}, m2m {not args.no_m2m}, pred_iou {iou_t:.4g}, stability {stab_t:.4g}, "
          f"device {device}; identical masks: {identical} ({len(ref)} masks); feature max diff (our "
          f"preprocessing vs sam2's) {feat_diff:.3g}\n")
    write_report("automatic_vs_sam2", rows,
                 ["engine", "median_s", "ratio_vs_sam2", "masks", "identical_masks", "mask_iou_vs_fp32", "peak_host_mb",
                  "peak_cuda_mb"],
                 args.out, extra={"config": args.config, "device": str(device), "size": args.size,
                                  "settings": {k: v for k, v in kw.items()}, "identical_masks": identical,
                                  "feature_max_diff": feat_diff, "auto_mask_iou_vs_fp32": auto_iou,
                                  "target": "ratio <= 0.5 with identical masks"})


def _mean_best_iou(reference: list[dict], other: list[dict]) -> float:
    """Mean over ``reference`` masks of the best IoU with any ``other`` mask (1.0 when both are empty)."""
    if not reference:
        return 1.0 if not other else 0.0
    best = []
    for r in reference:
        a = r["segmentation"]
        ious = [(a & b["segmentation"]).sum() / max(1, (a | b["segmentation"]).sum()) for b in other]
        best.append(max(ious, default=0.0))
    return float(np.mean(best))


if __name__ == "__main__":
    main()

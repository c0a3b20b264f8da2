"""How far "auto" and "bf16" move UnSAMv2 results from "fp32" (the official float32 computation), measured.

Precisions compared in one run, same weights, same inputs:

- "fp32": the reference (float32 everywhere);
- "bf16": bfloat16 autocast for every model call (image encoder, prompt encoder, mask decoder, memory path);
- "auto": the policy of ``napari_granseg.devices``: the image encoder in bf16 where bf16 is native, every
  other stage in float32 (on a CPU without native bf16 "auto" is "fp32").

Per (model, precision): interactive masks (every image x 3 clicks x 5 granularities) and propagated masks
(a drifting 2-cell stack, one click on the middle slice) compared with the fp32 masks: mask IoU (mean and
minimum), largest absolute logit difference; timings (median of ``--repeats`` interleaved runs): set_image
(the encoder), one predict call with 5 granularities (the decoder), one propagation. Models: the bundled
demo UnSAMv2 (trained, 256 px) and a random-weight Hiera-S (1024 px, SAM 2.1 config: the released models'
architecture; its masks are not meaningful objects and its logits are near 0, so it is a pessimistic case).

    python benchmarks/precision_agreement.py [--images 2] [--repeats 3] [--out benchmarks/results/precision_agreement.json]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_report  # noqa: E402

import napari_granseg as gs  # noqa: E402
from napari_granseg.devices import autocast_dtype  # noqa: E402
from napari_granseg.engine.propagate import ObjectPrompt, propagate  # noqa: E402
from napari_granseg.synthetic import nested_cells_scene, nested_cells_stack  # noqa: E402

G_VALUES = [0.1, 0.3, 0.5, 0.8, 1.0]
PRECISIONS = ["fp32", "bf16", "auto"]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _clock(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interactive_outputs(model, images: list, precision: str) -> tuple[list[np.ndarray], dict]:
    """Logits (5, H, W) per click, and one set_image / predict time."""
    pred = gs.GranularityPredictor(model, precision=precision, cache_size=1)
    logits = []
    for scene in images:
        pred.set_image(scene.image)
        for row, col in scene.centers[:3]:
            logits.append(pred.predict([[col, row]], [1], granularity=G_VALUES, return_logits=True)[0])
    image, (row, col) = images[0].image, images[0].centers[0]
    times = {"set_image": _clock(lambda: (pred.cache.clear(), pred.set_image(image))),
             "predict": _clock(lambda: pred.predict([[col, row]], [1], granularity=G_VALUES))}
    return logits, times


def propagation_output(model, stack: np.ndarray, prompt: ObjectPrompt, precision: str) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    labels = propagate(model, stack, prompt, granularity=0.8, precision=precision)
    return labels, time.perf_counter() - t0


def run_model(name: str, model, images: list, stack_size: int, slices: int, repeats: int) -> list[dict]:
    stack, scenes = nested_cells_stack(n_slices=slices, size=stack_size, seed=7)
    mid = slices // 2
    row, col = scenes[mid].centers[0]
    prompt = ObjectPrompt(frame=mid, points=[[col, row]], labels=[1])
    inter, prop = {}, {}
    times: dict[str, dict[str, list[float]]] = {p: {"set_image": [], "predict": [], "propagate": []} for p in PRECISIONS}
    for r in range(repeats):  # interleaved, so that load from other processes hits every precision alike
        for precision in PRECISIONS:
            logits, t = interactive_outputs(model, images, precision)
            labels, t_prop = propagation_output(model, stack, prompt, precision)
            inter.setdefault(precision, logits)
            prop.setdefault(precision, labels)
            times[precision]["set_image"].append(t["set_image"])
            times[precision]["predict"].append(t["predict"])
            times[precision]["propagate"].append(t_prop)
    rows = []
    ref, ref_prop = inter["fp32"], prop["fp32"]
    for precision in PRECISIONS:
        ious = [_iou(a[k] > 0, b[k] > 0) for a, b in zip(ref, inter[precision]) for k in range(len(G_VALUES))]
        prop_ious = [_iou(ref_prop[t] > 0, prop[precision][t] > 0) for t in range(slices)]
        med = {k: statistics.median(v) * 1e3 for k, v in times[precision].items()}
        rows.append({
            "model": name, "precision": precision,
            "encoder": str(autocast_dtype(model.device, precision, "encoder") or "float32").replace("torch.", ""),
            "heads": str(autocast_dtype(model.device, precision, "heads") or "float32").replace("torch.", ""),
            "masks": len(ious), "mean_iou_vs_fp32": float(np.mean(ious)), "min_iou_vs_fp32": float(min(ious)),
            "max_abs_logit_diff": max(float(np.abs(a - b).max()) for a, b in zip(ref, inter[precision])),
            "max_abs_logit": max(float(np.abs(a).max()) for a in ref),
            "propagated_min_iou_vs_fp32": float(min(prop_ious)),
            "set_image_ms": med["set_image"], "predict_5g_ms": med["predict"], "propagate_ms": med["propagate"]})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing runs per precision")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-hiera-s", action="store_true", help="only the demo model (fast)")
    parser.add_argument("--hiera-s-repeats", type=int, default=1, help="timing runs for Hiera-S (slow on a CPU)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = []
    demo = gs.load_model("unsamv2-demo", device=args.device)
    scenes = [nested_cells_scene(size=256, seed=1000 + i) for i in range(args.images)]
    rows += run_model("unsamv2-demo (trained, 256 px)", demo, scenes, 128, 5, args.repeats)
    if not args.skip_hiera_s:
        torch.manual_seed(0)
        hiera_s = gs.load_model(None, kind="unsamv2", config="configs/sam2.1/sam2.1_hiera_s.yaml", device=args.device)
        big = [nested_cells_scene(size=512, seed=2000 + i) for i in range(args.images)]
        rows += run_model("Hiera-S random weights (1024 px)", hiera_s, big, 256, 2, args.hiera_s_repeats)
    columns = ["model", "precision", "encoder", "heads", "masks", "mean_iou_vs_fp32", "min_iou_vs_fp32",
               "max_abs_logit_diff", "max_abs_logit", "propagated_min_iou_vs_fp32", "set_image_ms", "predict_5g_ms",
               "propagate_ms"]
    write_report("precision_agreement", rows, columns, args.out,
                 extra={"granularities": G_VALUES, "cpu_bf16_native": autocast_dtype("cpu", "bf16") is not None})


if __name__ == "__main__":
    main()

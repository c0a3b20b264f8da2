"""How far "auto", "bf16" and other splits of the image encoder move UnSAMv2 results from "fp32", measured.

Settings compared in one run, same weights, same inputs:

- "fp32": the reference (float32 everywhere, the official computation);
- "bf16": bfloat16 autocast for every model call (image encoder, prompt encoder, mask decoder, memory path);
- "auto": the policy of ``napari_granseg.devices``: the image encoder's bulk in bf16 where bf16 is native,
  its ``ENCODER_EXACT_PARTS`` and every other stage in float32 (on a CPU without native bf16: "fp32");
- candidate splits (rows "auto, fp32 parts: ..."): "auto" with other encoder parts kept in float32; "none"
  is the whole image encoder in bf16 with the decoder and memory path in float32 (the former "auto").

Per row: interactive masks (every image x 3 clicks x 5 granularities) compared with the fp32 masks: mask IoU
(mean and minimum), largest absolute logit difference; for fp32/bf16/auto also propagated masks (a drifting
2-cell stack, one click on the middle slice). Timings: set_image (the encoder, cache cleared) ``--repeats``
times per row, interleaved across rows so that load from other processes hits each alike (median and
minimum, with the 1-minute load average seen at each repeat); one predict call with 5 granularities; one
propagation. ``torch.set_num_threads(--threads)``. Models: the bundled demo UnSAMv2 (trained, 256 px) and a
random-weight Hiera-S (1024 px, SAM 2.1 config: the released models' architecture; its masks are not
meaningful objects and its logits are near 0, so it is a pessimistic case).

    python benchmarks/precision_agreement.py [--images 2] [--repeats 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_report  # noqa: E402

import napari_granseg as gs  # noqa: E402
from napari_granseg.devices import ENCODER_EXACT_PARTS, autocast_dtype  # noqa: E402
from napari_granseg.engine.propagate import ObjectPrompt, propagate  # noqa: E402
from napari_granseg.synthetic import nested_cells_scene, nested_cells_stack  # noqa: E402

G_VALUES = [0.1, 0.3, 0.5, 0.8, 1.0]
#: (row label, precision, encoder parts in float32 under "auto" (None: the policy's), propagate too)
SETTINGS = [
    ("fp32", "fp32", None, True),
    ("bf16", "bf16", None, True),
    ("auto, fp32 parts: none", "auto", (), False),
    ("auto, fp32 parts: fpn_neck, high_res_convs", "auto", ("fpn_neck", "high_res_convs"), False),
    ("auto, fp32 parts: patch_embed, first_stage, fpn_neck, high_res_convs", "auto",
     ("patch_embed", "first_stage", "fpn_neck", "high_res_convs"), False),
    ("auto, fp32 parts: residual_projections", "auto", ("residual_projections",), False),
    ("auto", "auto", None, True),
]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _clock(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _predictor(model, precision: str, exact_parts: tuple[str, ...] | None):
    """The engine's predictor; a candidate split only changes which encoder parts stay float32."""
    if exact_parts is None:
        return gs.GranularityPredictor(model, precision=precision, cache_size=1)
    split = type("CandidateSplit", (gs.GranularityPredictor,), {"encoder_exact_parts": exact_parts})
    return split(model, precision=precision, cache_size=1)


def interactive_outputs(pred, images: list) -> list[np.ndarray]:
    """Logits (5, H, W) per click."""
    logits = []
    for scene in images:
        pred.set_image(scene.image)
        for row, col in scene.centers[:3]:
            logits.append(pred.predict([[col, row]], [1], granularity=G_VALUES, return_logits=True)[0])
    return logits


def _dtype_name(model, precision: str, stage: str) -> str:
    return str(autocast_dtype(model.device, precision, stage) or "float32").replace("torch.", "")


def run_model(name: str, model, images: list, stack_size: int, slices: int, repeats: int) -> list[dict]:
    stack, scenes = nested_cells_stack(n_slices=slices, size=stack_size, seed=7)
    mid = slices // 2
    row, col = scenes[mid].centers[0]
    prompt = ObjectPrompt(frame=mid, points=[[col, row]], labels=[1])
    preds = {label: _predictor(model, precision, parts) for label, precision, parts, _ in SETTINGS}
    inter = {label: interactive_outputs(preds[label], images) for label in preds}
    prop, t_prop = {}, {}
    for label, precision, _, with_propagation in SETTINGS:
        if with_propagation:
            t0 = time.perf_counter()
            prop[label] = propagate(model, stack, prompt, granularity=0.8, precision=precision)
            t_prop[label] = time.perf_counter() - t0
    image, (r0, c0) = images[0].image, images[0].centers[0]
    times: dict[str, list[float]] = {label: [] for label in preds}
    loads = []
    for _ in range(repeats):  # interleaved, so that load from other processes hits every row alike
        loads.append(os.getloadavg()[0])
        for label, pred in preds.items():
            times[label].append(_clock(lambda: (pred.cache.clear(), pred.set_image(image))))
    rows = []
    ref, ref_prop = inter["fp32"], prop["fp32"]
    for label, precision, parts, _ in SETTINGS:
        ious = [_iou(a[k] > 0, b[k] > 0) for a, b in zip(ref, inter[label]) for k in range(len(G_VALUES))]
        prop_ious = [_iou(ref_prop[t] > 0, prop[label][t] > 0) for t in range(slices)] if label in prop else None
        pred = preds[label]
        t_predict = _clock(lambda: pred.predict([[c0, r0]], [1], granularity=G_VALUES))
        fp32_parts = ENCODER_EXACT_PARTS if parts is None else parts
        exact = _dtype_name(model, precision, "encoder_exact") if fp32_parts else "-"
        rows.append({
            "model": name, "setting": label, "precision": precision,
            "encoder": _dtype_name(model, precision, "encoder"),
            "encoder_exact_parts": ", ".join(fp32_parts) if fp32_parts and exact != _dtype_name(
                model, precision, "encoder") else "-",
            "encoder_exact": exact, "heads": _dtype_name(model, precision, "heads"),
            "masks": len(ious), "mean_iou_vs_fp32": float(np.mean(ious)), "min_iou_vs_fp32": float(min(ious)),
            "max_abs_logit_diff": max(float(np.abs(a - b).max()) for a, b in zip(ref, inter[label])),
            "max_abs_logit": max(float(np.abs(a).max()) for a in ref),
            "propagated_min_iou_vs_fp32": float(min(prop_ious)) if prop_ious else None,
            "set_image_ms_median": statistics.median(times[label]) * 1e3,
            "set_image_ms_min": min(times[label]) * 1e3,
            "set_image_vs_fp32_median": statistics.median(times[label]) / statistics.median(times["fp32"]),
            "set_image_ms_all": [t * 1e3 for t in times[label]], "load1_at_repeats": loads,
            "predict_5g_ms": t_predict * 1e3, "propagate_ms": t_prop[label] * 1e3 if label in t_prop else None})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved set_image timings per row")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for the whole run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-hiera-s", action="store_true", help="only the demo model (fast)")
    parser.add_argument("--skip-demo", action="store_true", help="only Hiera-S")
    parser.add_argument("--first-seed", type=int, default=0, help="offset of the scenes' seeds (other images)")
    parser.add_argument("--hiera-s-repeats", type=int, default=3, help="set_image timings for Hiera-S (slow on a CPU)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows = []
    if not args.skip_demo:
        demo = gs.load_model("unsamv2-demo", device=args.device)
        scenes = [nested_cells_scene(size=256, seed=1000 + args.first_seed + i) for i in range(args.images)]
        rows += run_model("unsamv2-demo (trained, 256 px)", demo, scenes, 128, 5, args.repeats)
    if not args.skip_hiera_s:
        torch.manual_seed(0)
        hiera_s = gs.load_model(None, kind="unsamv2", config="configs/sam2.1/sam2.1_hiera_s.yaml", device=args.device)
        big = [nested_cells_scene(size=512, seed=2000 + args.first_seed + i) for i in range(args.images)]
        rows += run_model("Hiera-S random weights (1024 px)", hiera_s, big, 256, 2, args.hiera_s_repeats)
    columns = ["model", "setting", "encoder", "encoder_exact_parts", "heads", "masks", "mean_iou_vs_fp32",
               "min_iou_vs_fp32", "max_abs_logit_diff", "max_abs_logit", "propagated_min_iou_vs_fp32",
               "set_image_ms_median", "set_image_ms_min", "set_image_vs_fp32_median", "predict_5g_ms", "propagate_ms"]
    write_report("precision_agreement", rows, columns, args.out,
                 extra={"granularities": G_VALUES, "cpu_bf16_native": autocast_dtype("cpu", "bf16") is not None,
                        "threads": args.threads, "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
                        "command": "python benchmarks/precision_agreement.py " + " ".join(sys.argv[1:])})


if __name__ == "__main__":
    main()

"""How far "auto" and "bf16" move UnSAMv2 results from "fp32" (the official float32 computation), measured.

For each model, every image, click and granularity is predicted at every precision with the same weights;
"fp32" is the reference. Reported per (model, precision): mask IoU with the fp32 mask (mean and minimum over
all masks), the largest absolute logit difference over all pixels, and set_image time (median) measured in
the same run. Models: the bundled demo UnSAMv2 (trained, 256 px) and a random-weight Hiera-S (1024 px,
SAM 2.1 config: the released models' architecture; its masks are not meaningful objects, its arithmetic is).

    python benchmarks/precision_agreement.py [--images 3] [--out benchmarks/results/precision_agreement.json]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import timeit, write_report  # noqa: E402

import napari_granseg as gs  # noqa: E402
from napari_granseg.devices import autocast_dtype  # noqa: E402
from napari_granseg.synthetic import nested_cells_scene  # noqa: E402

G_VALUES = [0.1, 0.3, 0.5, 0.8, 1.0]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def run_model(name: str, model, images: list, precisions: list[str], repeats: int) -> list[dict]:
    outputs: dict[str, list[np.ndarray]] = {}
    times: dict[str, float] = {}
    for precision in precisions:
        pred = gs.GranularityPredictor(model, precision=precision, cache_size=1)
        logits = []
        for scene in images:
            pred.set_image(scene.image)
            for row, col in scene.centers[:3]:
                logits.append(pred.predict([[col, row]], [1], granularity=G_VALUES, return_logits=True)[0])
        outputs[precision] = logits
        image = images[0].image
        times[precision] = timeit(lambda: (pred.cache.clear(), pred.set_image(image)), repeats=repeats,
                                  warmup=0)["median_s"]
    rows = []
    ref = outputs["fp32"]
    for precision in precisions:
        ious = [_iou(a[k] > 0, b[k] > 0) for a, b in zip(ref, outputs[precision]) for k in range(len(G_VALUES))]
        diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, outputs[precision]))
        scale = max(float(np.abs(a).max()) for a in ref)
        rows.append({"model": name, "precision": precision,
                     "autocast": str(autocast_dtype(model.device, precision)).replace("torch.", ""),
                     "masks": len(ious), "mean_iou_vs_fp32": float(np.mean(ious)), "min_iou_vs_fp32": float(min(ious)),
                     "max_abs_logit_diff": diff, "max_abs_logit": scale,
                     "set_image_ms": times[precision] * 1e3})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="set_image timing runs per precision")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-hiera-s", action="store_true", help="only the demo model (fast)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    precisions = ["fp32", "auto", "bf16"]
    rows = []
    demo = gs.load_model("unsamv2-demo", device=args.device)
    scenes = [nested_cells_scene(size=256, seed=1000 + i) for i in range(args.images)]
    rows += run_model("unsamv2-demo (trained, 256 px)", demo, scenes, precisions, args.repeats)
    if not args.skip_hiera_s:
        torch.manual_seed(0)
        hiera_s = gs.load_model(None, kind="unsamv2", config="configs/sam2.1/sam2.1_hiera_s.yaml", device=args.device)
        big = [nested_cells_scene(size=512, seed=2000 + i) for i in range(args.images)]
        rows += run_model("Hiera-S random weights (1024 px)", hiera_s, big, precisions, args.repeats)
    columns = ["model", "precision", "autocast", "masks", "mean_iou_vs_fp32", "min_iou_vs_fp32",
               "max_abs_logit_diff", "max_abs_logit", "set_image_ms"]
    write_report("precision_agreement", rows, columns, args.out, extra={"granularities": G_VALUES})


if __name__ == "__main__":
    main()

"""Fine-tuning UnSAMv2 on four labelled images of a domain the demo model never saw: what it gains, what it keeps,
what it costs.

New domains (``--domain``): cells packed like an epithelium, seen only by their bright membranes
(``synthetic_domains.membrane_cells_scene``, "membranes"), and rod-shaped bacteria lying side by side under uneven
illumination (``rod_cells_scene``, "rods"); the recipe's defaults were chosen on ANOTHER domain (dark lobed
blobs, the tests' domain; only the step cap beyond four labelled images came from 16-image membrane runs), and
the rods were added after the recipe, to measure it once more on a domain nobody looked at while choosing it. Four labelled training images (seeds 0-3, granularity 1.0 = whole objects);
held-out images (seeds 100-103) scored by one click at each object's centre, through the predictor at "auto"
(bf16 on a CPU with native bf16) and "fp32". Old domain: the demo's own nested cells (seeds 300-303), whole
cells at g = 1.0, before and after. Wall time of the whole gs.finetune call and the process's peak RSS.

Second table: the cost of one training step per choice for a 46 M-parameter SAM 2.1 Hiera-S UnSAMv2 (random
weights, 1024 px: the released models' architecture), and of encoding one image.

    python benchmarks/finetune.py [--domain rods] [--steps N] [--configs default,decoder:frozen] [--no-cost] [--threads 1]
    python benchmarks/finetune.py --model unsamv2-plus --device cuda --domain rods --no-cost   # a released model
    python benchmarks/finetune.py --model standin.pt --config granseg_tiny.yaml --domain rods --no-cost  # a file
    python benchmarks/finetune.py --configs default --set '{"keep_weight": 0, "anchor_weight": 0}' --steps 1200 --no-cost
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, write_report  # noqa: E402

import napari_granseg as gs  # noqa: E402
from napari_granseg.finetuning.data import split_objects  # noqa: E402
from napari_granseg.finetuning.score import click_iou  # noqa: E402
from napari_granseg.finetuning.trainer import FinetuneSettings, Finetuner  # noqa: E402
from napari_granseg.synthetic import nested_cells_scene  # noqa: E402
from napari_granseg.synthetic_domains import membrane_cells_scene, rod_cells_scene  # noqa: E402

SIZE = 128
#: The new domains (the four-image recipe was never chosen on them; only the step cap beyond four images was set
#: from 16-image membrane runs): --domain picks one.
DOMAINS = {"membranes": membrane_cells_scene, "rods": rod_cells_scene}


def _objects(labels):
    return [(i, int(k)) for i, lab in enumerate(labels) for k in np.unique(lab[lab > 0])]


def _data(n_train: int = 4, domain: str = "membranes"):
    scene = DOMAINS[domain]
    train = [scene(size=SIZE, seed=s) for s in range(n_train)]
    test = [scene(size=SIZE, seed=s) for s in range(100, 104)]
    old = [nested_cells_scene(size=SIZE, n_cells=3, seed=s) for s in range(300, 304)]
    return ([i for i, _ in train], [lab for _, lab in train]), ([i for i, _ in test], [lab for _, lab in test]), \
        ([s.image for s in old], [s.labels(2) for s in old])


def _keep_images(base):
    """What the model must keep segmenting: for the demo, gs.finetune's own choice (its training scenes); for a
    real checkpoint, scenes of the old domain the benchmark scores (other seeds), as a person passes images of
    their other experiments."""
    return None if base.is_demo else [nested_cells_scene(size=SIZE, n_cells=3, seed=9100 + i).image for i in range(4)]


def _scores(model, data, g=1.0) -> dict:
    (ti, tl), (oi, ol) = data
    return {"new_auto": click_iou(model, ti, tl, _objects(tl), g, "auto"),
            "new_fp32": click_iou(model, ti, tl, _objects(tl), g, "fp32"),
            "old_auto": click_iou(model, oi, ol, _objects(ol), g, "auto")}


def run_config(base, train, evaluation, config: str, steps: int | None, overrides: dict | None = None,
               domain: str = "membranes") -> dict:
    """``config``: "trainable:encoder" (e.g. "decoder:auto", "lora:frozen"), or "default" for gs.finetune's own;
    ``overrides``: other FinetuneSettings fields (e.g. {"keep_weight": 0} to see the fit without the guard)."""
    trainable, _, encoder = (FinetuneSettings.trainable + ":" + FinetuneSettings.encoder
                             if config == "default" else config).partition(":")
    before = _scores(base, evaluation)
    settings = FinetuneSettings(trainable=trainable, encoder=encoder or FinetuneSettings.encoder, **(overrides or {}))
    t0 = time.perf_counter()
    model = gs.finetune(train[0], train[1], model=base, granularity=1.0, steps=steps, settings=settings,
                        keep_images=_keep_images(base))
    wall = time.perf_counter() - t0
    after = _scores(model, evaluation)
    rec = model.info["finetune"]
    trained, _ = split_objects(train[1], settings.held_fraction, settings.seed)
    return {"model": base.name, "domain": domain, "trainable": trainable, "encoder": rec["encoder_trained"], "steps": rec["steps"],
            "overrides": json.dumps(overrides or {}), "train_images": len(train[0]),
            "objects_trained": rec["objects_trained"],
            "trained_cells_after": click_iou(model, train[0], train[1], trained, 1.0, "auto"),
            "new_before_auto": before["new_auto"], "new_after_auto": after["new_auto"],
            "new_before_fp32": before["new_fp32"], "new_after_fp32": after["new_fp32"],
            "gain_auto": after["new_auto"] - before["new_auto"],
            "old_before": before["old_auto"], "old_after": after["old_auto"],
            "old_change": after["old_auto"] - before["old_auto"],
            "held_back_before": rec["held_back_iou_before"], "held_back_after": rec["held_back_iou_after"],
            "wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def step_costs(repeats: int = 2) -> list[dict]:
    """Seconds per training step for each choice of what trains, on a random Hiera-S UnSAMv2 (1024 px, the
    released models' architecture), 8 objects per step (or 4 without corrections: the cheap CPU setting), and
    the one-off cost of encoding one image."""
    from napari_granseg.engine.interactive import GranularityPredictor

    base = gs.load_model(None, kind="unsamv2", config="configs/sam2.1/sam2.1_hiera_s.yaml", device="auto")
    img, lab = membrane_cells_scene(size=256, seed=0)
    t0 = time.perf_counter()
    GranularityPredictor(base, cache_size=1).set_image(img)
    encode = time.perf_counter() - t0
    rows = [{"choice": "encode one image (once per image and flip/rotation)", "seconds": encode,
             "device": str(base.device)}]
    objs = _objects([lab])
    full, light = {"objects_per_step": 8, "corrections": 1}, {"objects_per_step": 4, "corrections": 0}
    for trainable, encoder, extra in (("lora", "frozen", full), ("decoder", "frozen", full),
                                      ("decoder", "frozen", light),
                                      ("decoder", "last_stage", full), ("decoder", "all", full)):
        settings = FinetuneSettings(trainable=trainable, encoder=encoder, augment=1, steps=repeats + 1, **extra)
        tuner = Finetuner(base, [img], [lab], objs, 1.0, settings)
        opt = torch.optim.AdamW(list(tuner.params.values()), lr=1e-5)
        tuner.step(opt)
        t0 = time.perf_counter()
        for _ in range(repeats):
            tuner.step(opt)
        rows.append({"choice": f"training step, trainable={trainable}, encoder={encoder}, "
                               f"{settings.objects_per_step} objects, up to {settings.corrections} corrections "
                               f"({sum(p.numel() for p in tuner.params.values()) / 1e6:.2f} M trained parameters)",
                     "seconds": (time.perf_counter() - t0) / repeats, "device": str(base.device)})
        del tuner, opt
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: gs.finetune's)")
    ap.add_argument("--configs", default="default,decoder:frozen",
                    help="comma-separated trainable:encoder choices (e.g. decoder:all, lora:frozen) or default")
    ap.add_argument("--no-cost", action="store_true", help="skip the Hiera-S cost table")
    ap.add_argument("--cost-only", action="store_true", help="only the Hiera-S cost table")
    ap.add_argument("--set", default="{}", help='other FinetuneSettings fields as JSON, e.g. \'{"keep_weight": 0, '
                    '"anchor_weight": 0}\' (the fit without the forgetting guard)')
    ap.add_argument("--train-images", type=int, default=4, help="labelled training images of the new domain")
    ap.add_argument("--domain", default="membranes", choices=sorted(DOMAINS), help="the new domain")
    ap.add_argument("--model", default="unsamv2-demo",
                    help="the UnSAMv2 model to fine-tune: a zoo name (unsamv2-plus, ...) or a checkpoint file")
    ap.add_argument("--config", default=None,
                    help="a checkpoint file's model config (e.g. granseg_tiny.yaml for a demo-size model; "
                         "default: the file's own record, else SAM 2.1 Hiera-S)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (1 on a machine shared with other jobs: oversubscribed threads crawl)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = gs.load_model(args.model, kind="unsamv2", config=args.config, device=args.device)
    train, test, old = _data(args.train_images, args.domain)
    configs = [] if args.cost_only else args.configs.split(",")
    rows = [run_config(base, train, (test, old), t, args.steps, json.loads(args.set), args.domain) for t in configs]
    cols = ["domain", "trainable", "encoder", "steps", "overrides", "train_images", "trained_cells_after", "new_before_auto",
            "new_after_auto", "new_before_fp32", "new_after_fp32", "gain_auto", "old_before", "old_after", "old_change", "held_back_before", "held_back_after", "wall_s",
            "peak_rss_mb"]
    costs = [] if args.no_cost else step_costs()
    extra = {"costs_hiera_s": costs, "load_average": list(__import__("os").getloadavg()),
             "note": "machine shared with other jobs while measured (see load_average)", "env": environment()}
    write_report("finetune" if args.domain == "membranes" else f"finetune_{args.domain}", rows, cols, args.out, extra)
    for r in costs:
        print(f"| {r['choice']} | {r['seconds']:.3f} s | {r['device']} |")


if __name__ == "__main__":
    main()

"""``granseg-eval``: the papers' metrics on a dataset folder, written as a markdown table and JSON.

Subcommands: ``interactive`` (NoC@80/85/90, 1-IoU; optional stock SAM 2 in the same run), ``whole`` (AR@k),
``fewshot`` (mIoU, FB-IoU). Models load through ``napari_granseg.load_model`` only when a command runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .readers import FORMATS, read_dataset

__all__ = ["main", "build_parser"]

DEFAULT_WHOLE_GENERATOR = "granseg_training.evaluation.segmenters:eval_segmenter"


def _floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _granularity(text: str) -> str | float | None:
    t = text.strip().lower()
    if t in ("oracle", "none"):
        return None if t == "none" else "oracle"
    try:
        g = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--granularity must be 'oracle', 'none' or a number in [0.1, 1], got {text!r}")
    if not 0.1 <= g <= 1.0:
        raise argparse.ArgumentTypeError(f"granularity {g} is outside [0.1, 1]")
    return g


def _add_model_args(p: argparse.ArgumentParser, default_kind: str | None = None) -> None:
    p.add_argument("--model", default=None,
                   help="zoo name (e.g. unsamv2-plus) or checkpoint path; none with --kind: random weights (tests)")
    p.add_argument("--kind", default=default_kind, help="unsamv2 | sam2 | sansa (required for a checkpoint path)")
    p.add_argument("--config", default=None,
                   help="SAM 2 config of the checkpoint (e.g. configs/sam2.1/sam2.1_hiera_s.yaml)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")


def _add_data_args(p: argparse.ArgumentParser, flag: str = "--dataset") -> None:
    p.add_argument(flag, required=True, help="dataset folder (or COCO JSON file for --format coco)")
    p.add_argument("--format", default="folder", choices=FORMATS, help="dataset layout (default folder)")
    p.add_argument("--images", default=None, help="images folder (COCO: where file_name resolves; folder: images/)")
    p.add_argument("--labels", default=None, help="labels folder for --format folder (default <dataset>/labels)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")


def _add_out_args(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--out", default=f"granseg-eval-{name}", help="output prefix: writes PREFIX.md and PREFIX.json")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="granseg-eval", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("interactive", help="NoC@80/85/90 and 1-IoU with the standard click simulator")
    _add_model_args(p, None)
    _add_data_args(p)
    p.add_argument("--granularity", type=_granularity, default="oracle",
                   help="'oracle' (best g in 0.1..1.0 per object, as the papers), a fixed g, or 'none'")
    p.add_argument("--max-clicks", type=int, default=20)
    p.add_argument("--thresholds", type=_floats, default=[0.80, 0.85, 0.90], help="NoC IoU thresholds")
    p.add_argument("--target-iou", type=float, default=0.90, help="oracle target IoU (0.85 for part datasets)")
    p.add_argument("--logit-threshold", type=float, default=-1.0, help="mask = logits > this (-1 as upstream)")
    p.add_argument("--min-area", type=int, default=1, help="skip objects smaller than this many pixels")
    p.add_argument("--compare-sam2", default=None, metavar="CHECKPOINT",
                   help="also evaluate stock SAM 2 from this checkpoint ('random' = random weights, tests)")
    p.add_argument("--sam2-config", default=None, help="config of the --compare-sam2 checkpoint")
    p.add_argument("--sam2-first-mask", default="oracle", choices=["oracle", "score"],
                   help="SAM 2's first click: best of its 3 masks by IoU with the truth (oracle) or by predicted IoU")
    _add_out_args(p, "interactive")

    p = sub.add_parser("whole", help="class-agnostic AR@1/10/100/1000 (COCOeval, useCats=0)")
    _add_model_args(p, None)
    _add_data_args(p)
    p.add_argument("--max-dets", type=_ints, default=[1, 10, 100, 1000])
    p.add_argument("--granularity", type=_floats, default=[round(0.1 * k, 1) for k in range(1, 11)],
                   help="granularities whose masks are pooled (default 0.1,...,1.0 as upstream)")
    p.add_argument("--generator", default=DEFAULT_WHOLE_GENERATOR,
                   help="module:function(model, granularities) -> (image -> [(mask, score), ...]) for UnSAMv2")
    p.add_argument("--points-per-side", type=int, default=64, help="stock SAM 2 grid (UnSAMv2 eval: 64)")
    p.add_argument("--compare-sam2", default=None, metavar="CHECKPOINT")
    p.add_argument("--sam2-config", default=None)
    _add_out_args(p, "whole")

    p = sub.add_parser("fewshot", help="class-wise mIoU and FB-IoU from reference and target folders")
    _add_model_args(p, "sansa")
    p.add_argument("--base-checkpoint", default=None, help="SAM 2 base checkpoint for SANSA adapter files")
    _add_data_args(p, "--reference")
    p.add_argument("--target", required=True, help="target dataset (same --format as --reference)")
    p.add_argument("--target-images", default=None)
    p.add_argument("--target-labels", default=None)
    p.add_argument("--shots", type=int, default=1, help="references per class")
    p.add_argument("--image-size", type=int, default=640, help="SANSA square pre-resize (640; 518 for FSS/medical)")
    p.add_argument("--include-absent", action="store_true",
                   help="also score targets without the class (false positives count)")
    p.add_argument("--seed", type=int, default=0)
    _add_out_args(p, "fewshot")
    return parser


def _log(args: argparse.Namespace) -> Callable[[str], None]:
    return (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))


def _load(args: argparse.Namespace, kind: str | None = None, **extra: Any):
    import napari_granseg as gs

    kw: dict[str, Any] = {"kind": kind or args.kind, "config": args.config, "device": args.device, **extra}
    return gs.load_model(args.model, **{k: v for k, v in kw.items() if v is not None})


def _load_sam2(checkpoint: str, config: str | None, device: str):
    import napari_granseg as gs

    if config is None:
        raise SystemExit("--sam2-config is required with --compare-sam2 (e.g. configs/sam2.1/sam2.1_hiera_s.yaml)")
    return gs.load_model(None if checkpoint == "random" else checkpoint, kind="sam2", config=config, device=device)


def _name(args: argparse.Namespace) -> str:
    if args.model is None:
        return f"{args.kind or 'model'} (random weights)"
    return Path(args.model).stem if Path(args.model).suffix else str(args.model)


def _samples(args: argparse.Namespace, path: str, images: str | None, labels: str | None) -> list:
    return list(read_dataset(path, args.format, images, labels, args.limit))


def _interactive_predictor(loaded):
    """Stock SAM 2 models go through Meta's predictor (3 masks on click 1); UnSAMv2 through ours."""
    if getattr(loaded, "kind", None) == "sam2":
        from .sam2_baseline import Sam2Interactive

        return Sam2Interactive(loaded.module), True
    import napari_granseg as gs

    return gs.GranularityPredictor(loaded), False


def run_interactive(args: argparse.Namespace) -> dict:
    from .interactive import evaluate_interactive

    log = _log(args)
    samples = _samples(args, args.dataset, args.images, args.labels)
    common = dict(max_clicks=args.max_clicks, thresholds=args.thresholds, target_iou=args.target_iou,
                  logit_threshold=args.logit_threshold, min_area=args.min_area, progress=log)
    methods: dict[str, dict] = {}
    loaded = _load(args)
    predictor, stock = _interactive_predictor(loaded)
    granularity = None if stock else args.granularity
    label = _name(args) + ("" if stock else (" (oracle g)" if granularity == "oracle" else f" (g={granularity})"))
    methods[label] = evaluate_interactive(predictor, samples, granularity=granularity,
                                          first_click_multimask=stock, first_mask=args.sam2_first_mask, **common)
    if args.compare_sam2:
        from .sam2_baseline import Sam2Interactive

        sam2 = _load_sam2(args.compare_sam2, args.sam2_config, args.device)
        methods["SAM 2"] = evaluate_interactive(Sam2Interactive(sam2.module), samples, granularity=None,
                                                first_click_multimask=True, first_mask=args.sam2_first_mask,
                                                **common)
    notes = [f"{args.max_clicks} clicks max, NoC thresholds {args.thresholds}, masks = logits > "
             f"{args.logit_threshold}, previous logits fed back as mask input.",
             f"SAM 2: best of 3 masks on the first click ({args.sam2_first_mask}), single mask afterwards."]
    if args.granularity == "oracle" and not stock:
        notes.append(f"oracle g: fewest clicks to IoU {args.target_iou} over g in 0.1..1.0, ties: best "
                     "first-click IoU.")
    return {"kind": "interactive", "dataset": str(args.dataset), "format": args.format, "methods": methods,
            "notes": notes}


def _resolve(spec: str) -> Callable:
    module, _, func = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as err:
        raise SystemExit(f"whole-image generator {spec!r} not found ({err}); pass --generator module:function, a "
                         "function (model, granularities) -> (image -> [(mask, score), ...])") from err


def run_whole(args: argparse.Namespace) -> dict:
    from .sam2_baseline import sam2_whole_image
    from .whole_image import evaluate_whole_image

    log = _log(args)
    samples = _samples(args, args.dataset, args.images, args.labels)
    methods: dict[str, dict] = {}
    if args.model is not None or args.kind is not None:
        loaded = _load(args)
        if loaded.kind == "sam2":
            seg = sam2_whole_image(loaded.module, points_per_side=args.points_per_side)
            methods[_name(args)] = evaluate_whole_image(seg, samples, args.max_dets, log)
        else:
            seg = _resolve(args.generator)(loaded, list(args.granularity))
            methods[f"{_name(args)} (g pooled)"] = evaluate_whole_image(seg, samples, args.max_dets, log)
    if args.compare_sam2:
        sam2 = _load_sam2(args.compare_sam2, args.sam2_config, args.device)
        seg = sam2_whole_image(sam2.module, points_per_side=args.points_per_side)
        methods["SAM 2"] = evaluate_whole_image(seg, samples, args.max_dets, log)
    if not methods:
        raise SystemExit("nothing to evaluate: give --model (and --kind/--config) and/or --compare-sam2")
    return {"kind": "whole", "dataset": str(args.dataset), "format": args.format, "methods": methods,
            "notes": ["AR@k: COCOeval segm, useCats=0, score = predicted IoU, mean recall over IoU 0.50:0.95."]}


def run_fewshot(args: argparse.Namespace) -> dict:
    import napari_granseg as gs

    from .fewshot import evaluate_fewshot

    log = _log(args)
    refs = _samples(args, args.reference, args.images, args.labels)
    targets = _samples(args, args.target, args.target_images, args.target_labels)
    loaded = _load(args, base_checkpoint=args.base_checkpoint)
    result = evaluate_fewshot(lambda: gs.FewShotSegmenter(loaded, image_size=args.image_size), refs, targets,
                              shots=args.shots, include_absent=args.include_absent, seed=args.seed, progress=log)
    return {"kind": "fewshot", "dataset": f"{args.reference} -> {args.target}", "format": args.format,
            "methods": {_name(args): result},
            "notes": ["mIoU: per-class intersections/unions accumulated over episodes, mean over classes; "
                      "FB-IoU: mean of foreground and background IoU over all episodes."]}


def main(argv: Sequence[str] | None = None) -> int:
    from .report import to_markdown, write_report

    args = build_parser().parse_args(argv)
    runners = {"interactive": run_interactive, "whole": run_whole, "fewshot": run_fewshot}
    try:
        report = runners[args.command](args)
    except (FileNotFoundError, ValueError) as err:
        print(f"granseg-eval: error: {err}", file=sys.stderr)
        return 2
    md, js = write_report(report, args.out)
    print(to_markdown(report))
    print(f"wrote {md} and {js}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

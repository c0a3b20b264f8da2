"""``granseg-pseudolabel IMAGES_DIR OUT_DIR``: UnSAMv2-style pseudo-labels for a folder of images.

Examples::

    granseg-pseudolabel images/ labels/                                   # DINOv3 ViT-B/16 from the hub
    granseg-pseudolabel images/ labels/ --backbone timm:vit_base_patch14_dinov2.lvd142m
    granseg-pseudolabel images/ labels/ --pretrained-weights dinov3_vitb16.safetensors   # offline
    granseg-pseudolabel images/ labels/ --proposals cutler_masks/         # your own divide stage

Re-running the same command resumes: images whose JSON is complete are skipped.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from .features import DEFAULT_TIMM_MODEL, make_extractor
from .pipeline import PseudoLabelConfig, run_folder

__all__ = ["main", "build_parser"]


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "native", "0") else int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="granseg-pseudolabel", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = PseudoLabelConfig()
    p.add_argument("images_dir", help="folder of images (png, jpg, tif)")
    p.add_argument("out_dir", help="folder for one COCO JSON per image")
    p.add_argument("--backbone", default=f"timm:{DEFAULT_TIMM_MODEL}",
                   help="'timm:MODEL' (DINO / DINOv2 / DINOv3 ViT from timm) or 'color' (no weights; demo/tests)")
    p.add_argument("--pretrained-weights", default=None, metavar="PATH",
                   help="local state dict (.safetensors / .pth) for the timm model, for offline machines")
    p.add_argument("--random-weights", action="store_true",
                   help="timm model with random weights (testing only: labels are meaningless)")
    p.add_argument("--device", default="cpu", help="torch device for the backbone (cpu, cuda, mps)")
    p.add_argument("--max-instances", type=int, default=d.max_instances, help="MaskCut objects per image")
    p.add_argument("--proposals", default=None, metavar="DIR",
                   help="folder with STEM.npy / STEM.png / STEM.tif proposals replacing MaskCut")
    p.add_argument("--tau", type=float, default=d.tau, help="MaskCut affinity threshold")
    p.add_argument("--max-ncut", type=float, default=None, help="stop MaskCut when the Ncut value exceeds this")
    p.add_argument("--divide-long-side", type=_optional_int, default=d.divide_long_side,
                   help="long side (px) of the image for divide features ('native' keeps it)")
    p.add_argument("--conquer-long-side", type=_optional_int, default=d.conquer_long_side,
                   help="long side (px) of each instance crop for conquer features ('native' keeps it)")
    p.add_argument("--stop-on-error", action="store_true", help="stop at the first failing image")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    cfg = PseudoLabelConfig(max_instances=args.max_instances, tau=args.tau, max_ncut=args.max_ncut,
                            divide_long_side=args.divide_long_side, conquer_long_side=args.conquer_long_side)
    try:
        extractor = make_extractor(args.backbone, pretrained=not args.random_weights,
                                   pretrained_weights=args.pretrained_weights, device=args.device)
    except (RuntimeError, ValueError, FileNotFoundError, ImportError) as exc:
        print(f"granseg-pseudolabel: {exc}", file=sys.stderr)
        return 2
    summary = run_folder(args.images_dir, args.out_dir, extractor, cfg, proposals=args.proposals,
                         progress=not args.no_progress, stop_on_error=args.stop_on_error)
    print(f"{len(summary.processed)} images labelled, {len(summary.skipped)} already done, "
          f"{len(summary.failed)} failed, {summary.num_masks} masks -> {args.out_dir}")
    for name, err in summary.failed:
        print(f"  failed: {name}: {err}", file=sys.stderr)
    return 1 if summary.failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

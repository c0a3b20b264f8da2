"""``granseg-train``: train UnSAMv2 (``unsamv2``) or SANSA (``sansa``); rebuild the bundled demo models
(``demo``: UnSAMv2, ``sansa-demo``: few-shot).

Examples::

    granseg-train unsamv2 --config run.yaml
    granseg-train unsamv2 --coco-json pseudo/ --image-root images/ --init-checkpoint sam2.1_hiera_small.pt \
        --steps 15000 --batch-size 2 --out-dir runs/unsamv2
    torchrun --nproc_per_node 2 -m granseg_training.cli unsamv2 --config run.yaml   # DDP
    granseg-train demo                      # rewrites src/napari_granseg/demo/unsamv2_demo.{pt,json}
    granseg-train sansa-demo                # rewrites src/napari_granseg/demo/sansa_demo.{pt,json}
    granseg-train sansa ...                 # see granseg_training.sansa.cli
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence
from .config_io import apply_set_overrides

__all__ = ["main", "build_parser"]


def _add_unsamv2_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML/JSON file of UnSAMv2TrainConfig fields (flags below override it)")
    p.add_argument("--model-config", dest="model_config", help="SAM 2 model config (default sam2.1_hiera_s)")
    p.add_argument("--init-checkpoint", dest="init_checkpoint", help="SAM 2.1 or UnSAMv2 checkpoint to start from")
    p.add_argument("--trainable", choices=["upstream", "all"])
    p.add_argument("--data", choices=["synthetic", "coco"])
    p.add_argument("--coco-json", dest="coco_json", help="pseudo-label JSON file or folder (sets --data coco)")
    p.add_argument("--image-root", dest="image_root")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--lr-min", dest="lr_min", type=float)
    p.add_argument("--max-masks", dest="max_masks", type=int)
    p.add_argument("--correction-clicks", dest="correction_clicks", type=int)
    p.add_argument("--inner-click-prob", dest="inner_click_prob", type=float)
    p.add_argument("--augment", dest="augment", action="store_true", default=None, help="turn augmentation on")
    p.add_argument("--device")
    p.add_argument("--num-threads", dest="num_threads", type=int)
    p.add_argument("--num-workers", dest="num_workers", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--out-dir", dest="out_dir")
    p.add_argument("--save-every", dest="save_every", type=int)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="any other config field, value parsed as JSON (e.g. --set 'n_cells=[1,3]' precision=fp32)")


def _config_from_args(args: argparse.Namespace):
    from .unsamv2.config import UnSAMv2TrainConfig

    data: dict = {}
    if args.config:
        data.update(UnSAMv2TrainConfig.from_file(args.config).to_dict())
    for key in ("model_config", "init_checkpoint", "trainable", "data", "coco_json", "image_root", "steps",
                "batch_size", "lr", "lr_min", "max_masks", "correction_clicks", "inner_click_prob", "device",
                "num_threads", "num_workers", "seed", "out_dir", "save_every", "progress"):
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    if args.coco_json and "data" not in data:
        data["data"] = "coco"
    if args.augment:
        data.setdefault("augment", {})
        data["augment"] = {**(data["augment"] if isinstance(data["augment"], dict) else {}), "enabled": True}
    apply_set_overrides(data, args.set)
    return UnSAMv2TrainConfig.from_dict(data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="granseg-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_unsamv2_flags(sub.add_parser("unsamv2", help="train UnSAMv2 (granularity modules + LoRA, or all)"))
    demo = sub.add_parser("demo", help="rebuild the bundled tiny demo model from synthetic nested scenes")
    demo.add_argument("--steps", type=int, default=None, help="image-stage steps (default: the recorded recipe)")
    demo.add_argument("--memory-steps", dest="memory_steps", type=int, default=None,
                      help="memory-stage steps (default: the recorded recipe)")
    demo.add_argument("--from-stage1", dest="from_stage1", default=None,
                      help="skip the image stage: start the memory stage from this checkpoint")
    demo.add_argument("--out", default=None, help="checkpoint path (default: the package's demo/unsamv2_demo.pt)")
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--num-threads", dest="num_threads", type=int, default=None)
    demo.add_argument("--seed", type=int, default=1)
    sdemo = sub.add_parser("sansa-demo", help="rebuild the bundled tiny few-shot demo model (discs vs triangles)")
    sdemo.add_argument("--steps", type=int, default=None, help="training steps (default: the recorded recipe)")
    sdemo.add_argument("--out", default=None, help="checkpoint path (default: the package's demo/sansa_demo.pt)")
    sdemo.add_argument("--device", default="cpu")
    sdemo.add_argument("--num-threads", dest="num_threads", type=int, default=None)
    sdemo.add_argument("--seed", type=int, default=0)
    sub.add_parser("sansa", help="train SANSA adapters (arguments: granseg-train sansa --help)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sansa":  # delegate everything after the subcommand
        try:
            from .sansa.cli import main as sansa_main
        except ImportError as err:
            raise SystemExit(f"SANSA training is not available in this installation ({err}).") from err
        return sansa_main(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    if args.command == "unsamv2":
        from .unsamv2.trainer import train_unsamv2

        path = train_unsamv2(_config_from_args(args))
        print(f"checkpoint: {path}")
        return 0
    if args.command == "demo":
        from .unsamv2.demo import build_demo

        meta = build_demo(steps=args.steps, out=args.out, device=args.device, num_threads=args.num_threads,
                          seed=args.seed, command=["granseg-train", *argv], memory_steps=args.memory_steps,
                          from_stage1=args.from_stage1)
        print(json.dumps(meta, indent=2))
        return 0
    if args.command == "sansa-demo":
        from .sansa.demo import build_sansa_demo

        meta = build_sansa_demo(steps=args.steps, out=args.out, device=args.device, num_threads=args.num_threads,
                                seed=args.seed, command=["granseg-train", *argv])
        print(json.dumps(meta, indent=2))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())

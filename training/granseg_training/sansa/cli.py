"""``granseg-train sansa``: train SANSA adapters (or a tiny model from scratch) on few-shot episodes.

Examples::

    granseg-train sansa --data folder --data-root my_data/ --base-checkpoint sam2_hiera_large.pt \\
        --steps 5000 --batch-size 4 --shots 1 --out-dir runs/sansa          # adapters only (SANSA recipe)
    granseg-train sansa --model-config granseg_tiny.yaml --trainable all --data synthetic \\
        --image-size 0 --loss-size 0 --lr 2e-3 --steps 400 --device cpu    # tiny smoke model from scratch
    granseg-train sansa --recipe demo                                       # the bundled demo recipe

``my_data/images/*.png|tif`` with ``my_data/labels/<same stem>.*`` (each label id > 0 is a class).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence
from ..config_io import apply_set_overrides

__all__ = ["main", "build_parser", "config_from_args"]

_FLAGS = ("model_config", "base_checkpoint", "init_adapters", "channel_factor", "trainable", "data", "data_root",
          "scene_size", "shots", "prompt", "image_size", "loss_size", "steps", "batch_size", "lr", "lr_min",
          "warmup_steps", "grad_clip", "device", "num_threads", "seed", "out_dir", "checkpoint_name", "progress")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="granseg-train sansa", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML/JSON file of SansaTrainConfig fields (flags override it)")
    p.add_argument("--recipe", choices=["test", "demo"], help="start from a recorded tiny-model recipe")
    p.add_argument("--model-config", dest="model_config", help="SAM 2 config (default sam2_hiera_l.yaml)")
    p.add_argument("--base-checkpoint", dest="base_checkpoint", help="SAM 2.0 Hiera-L checkpoint")
    p.add_argument("--init-adapters", dest="init_adapters", help="adapter checkpoint to start from")
    p.add_argument("--channel-factor", dest="channel_factor", type=float)
    p.add_argument("--trainable", choices=["adapters", "all"])
    p.add_argument("--data", choices=["synthetic", "folder"])
    p.add_argument("--data-root", dest="data_root")
    p.add_argument("--scene-size", dest="scene_size", type=int)
    p.add_argument("--shots", type=int, help="references per episode: 1..shots")
    p.add_argument("--prompt", choices=["mask", "multi"])
    p.add_argument("--image-size", dest="image_size", type=int, help="square pre-resize (0: none)")
    p.add_argument("--loss-size", dest="loss_size", type=int, help="loss resolution (0: model size)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--lr-min", dest="lr_min", type=float)
    p.add_argument("--warmup-steps", dest="warmup_steps", type=int)
    p.add_argument("--grad-clip", dest="grad_clip", type=float)
    p.add_argument("--device")
    p.add_argument("--num-threads", dest="num_threads", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--out-dir", dest="out_dir")
    p.add_argument("--checkpoint-name", dest="checkpoint_name")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other fields, values as JSON")
    return p


def config_from_args(args: argparse.Namespace):
    from .config import SansaTrainConfig
    from .recipes import demo_config, fast_test_config

    data: dict = {}
    if args.recipe:
        recipe = {"test": fast_test_config, "demo": demo_config}[args.recipe]
        data.update(recipe(args.out_dir or f"runs/sansa_{args.recipe}").to_dict())
    if args.config:
        data.update(SansaTrainConfig.from_file(args.config).to_dict())
    for key in _FLAGS:
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    for key in ("image_size", "loss_size"):
        if data.get(key) == 0:
            data[key] = None
    apply_set_overrides(data, args.set)
    return SansaTrainConfig.from_dict(data)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from .trainer import train_sansa

    path = train_sansa(config_from_args(args))
    print(f"checkpoint: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

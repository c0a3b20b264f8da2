"""``granseg finetune IMAGES --labels LABELS --out model.pt``: fine-tune UnSAMv2 on labelled image files.

Images are matched with their label images as the few-shot command matches references: by file stem, the
label file named like the image or ``<stem>_labels``/``_label``/``_mask``/``_masks`` with an image suffix. Every
problem is found before training and reported as one line per file; then nothing is written and the exit
status is 2.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .finetuning.advice import next_step_advice

__all__ = ["add_finetune_parser", "run_finetune", "pair_label_files"]


def add_finetune_parser(sub) -> argparse.ArgumentParser:
    """Register the ``finetune`` subcommand on the ``granseg`` parser's subparsers."""
    ft = sub.add_parser("finetune", help="fine-tune UnSAMv2 on your own labelled images (encoder frozen: minutes "
                                         "on a CPU)")
    ft.add_argument("images", nargs="+", help="image files or folders")
    ft.add_argument("--labels", required=True,
                    help="folder of instance label images (0 = background), named like the images or <stem>_labels.tif")
    ft.add_argument("--out", required=True, help="checkpoint to write (.pt); load it with --model PATH or "
                                                 "napari_granseg.load_model(PATH)")
    ft.add_argument("--granularity", "-g", type=float, default=1.0,
                    help="what the labels stand for: 1.0 whole objects (default) .. 0.1 small parts")
    ft.add_argument("--steps", type=int, default=None,
                    help="training steps (default: 40 per object, 400-800 for four images, up to 200 per labelled "
                         "image beyond)")
    ft.add_argument("--model", default=None, help="UnSAMv2 model to start from: zoo name or checkpoint (default: "
                                                  "best cached, else the demo)")
    ft.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    ft.add_argument("--recursive", action="store_true", help="also take images in sub-folders")
    ft.add_argument("--no-progress", action="store_true", help="no progress lines")
    return ft


def pair_label_files(images: list[Path], label_dir: Path) -> dict[Path, Path | None]:
    """Each image with its label file in ``label_dir`` (None when there is none), by the few-shot naming rules."""
    from .batch.job import label_files_by_stem

    by_stem = label_files_by_stem(label_dir)
    return {img: by_stem.get(img.stem) for img in images}


def _read_pairs(args) -> tuple[list, list, list[str]]:
    """(images, labels, problems): every file read and checked; one problem line per bad file."""
    import numpy as np

    from .batch import expand_inputs
    from .io import read_image

    label_dir = Path(args.labels)
    if not label_dir.is_dir():
        return [], [], [f"{label_dir}: label folder not found (--labels DIR: the folder of label images)"]
    pairs = pair_label_files(expand_inputs(args.images, recursive=args.recursive), label_dir)
    images, labels, problems = [], [], []
    for img_path, lab_path in pairs.items():
        if lab_path is None:
            problems.append(f"{img_path}: no label image in {label_dir} (name it {img_path.stem}_labels.tif)")
            continue
        try:
            img, lab = read_image(img_path), np.asarray(read_image(lab_path))
        except Exception as err:  # noqa: BLE001 - unreadable files: one line each
            problems.append(f"{img_path}: cannot be read with its labels {lab_path.name} ({err})")
            continue
        if lab.shape != img.shape[:2]:
            problems.append(f"{lab_path}: labels are {lab.shape} but {img_path.name} is {img.shape[:2]}: a label "
                            f"image must have its image's height and width")
        elif not np.issubdtype(lab.dtype, np.integer):
            problems.append(f"{lab_path}: labels are {lab.dtype}: save an integer instance label image")
        elif not (lab > 0).any():
            problems.append(f"{lab_path}: holds no objects (all 0): label the objects of {img_path.name} or "
                            f"leave that image out")
        else:
            images.append(img)
            labels.append(lab)
    if not pairs:
        problems.append(f"{' '.join(args.images)}: no image files found")
    return images, labels, problems


def run_finetune(args) -> int:
    """Check everything, train, write ``--out``; returns the exit status."""
    from .finetuning.checkpoint import check_out_path
    from .finetuning.data import FinetuneInputError, check_inputs

    def fail(line: str) -> None:
        print(f"granseg: error: {line}", file=sys.stderr)

    try:
        check_out_path(args.out)
        images, labels, problems = _read_pairs(args)
    except (OSError, ValueError) as err:
        fail(str(err))
        return 2
    if not problems and images:
        try:
            check_inputs(images, labels)
        except FinetuneInputError as err:
            problems.append(f"{args.labels}: {err}")
    if problems:
        for line in problems:
            fail(line)
        fail("nothing was written; fix the files above and run again")
        return 2
    import napari_granseg as gs

    last = [0.0]

    def progress(step: int, total: int, loss: float, eta: float) -> None:
        if args.no_progress or (time.monotonic() - last[0] < 2.0 and step < total):
            return
        last[0] = time.monotonic()
        print(f"step {step}/{total}  loss {loss:.3f}  {eta:.0f} s left", flush=True)

    try:
        model = gs.finetune(images, labels, model=args.model, granularity=args.granularity, out=args.out,
                            steps=args.steps, progress=progress, device=args.device)
    except KeyboardInterrupt:
        fail("interrupted: nothing was written")
        return 130
    except (OSError, ValueError, RuntimeError) as err:
        fail(str(err))
        return 2
    rec = model.info["finetune"]
    print(f"held-back objects ({rec['objects_held_back']}, never trained on): click IoU "
          f"{rec['held_back_iou_before']:.3f} before -> {rec['held_back_iou_after']:.3f} after")
    advice = next_step_advice(rec)
    if advice:
        print(advice)
    print(f"wrote {args.out}; use it with: granseg segment IMAGES --model {args.out}")
    return 0

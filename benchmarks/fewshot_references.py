"""Few-shot with many references: one SAM 2 memory (7 frames read) vs memory banks sharing reference 0.

SAM 2 reads the conditioning frame and the 6 frames before the target, so in one memory the masks of
references 1..k-7 are never read. The engine splits k > 7 references into banks of <= 7 frames that share
reference 0 and averages the banks' logits. This compares, on the same weights, references and targets:

- ``single``: all k references in one memory (the official episode; identical to ``banks`` for k <= 7);
- ``banks``: the engine (mean of the banks' logits);
- ``banks_prob``: the alternative fusion, mean of the banks' probabilities (each upsampled to the image).

Data: synthetic discs (class 1) vs triangles (class 2), uint16 scenes; class-wise mIoU (intersections and
unions summed per class over all targets, then averaged over the classes), as SANSA evaluates.

    python benchmarks/fewshot_references.py                       # the bundled demo model
    python benchmarks/fewshot_references.py --checkpoint /tmp/granseg_fixture_cache/sansa_1000/sansa_test.pt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_report  # noqa: E402

METHODS = ("single", "banks", "banks_prob")


def _prefix(memory: dict, k: int) -> dict:
    """The memory of the first k references (reference outputs do not depend on each other)."""
    return {"cond_frame_outputs": dict(memory["cond_frame_outputs"]),
            "non_cond_frame_outputs": {i: memory["non_cond_frame_outputs"][i] for i in range(1, k)}}


@torch.inference_mode()
def _masks(fs, feats, memory: dict, k: int, shape) -> dict[str, np.ndarray]:
    from napari_granseg.engine.episode import memory_banks, segment_with_banks, target_step

    sam = fs.sam
    sub = _prefix(memory, k)
    banks = memory_banks(sam, sub)
    with fs.precision_context():
        single = target_step(sam, feats, sub, frame_idx=k, num_frames=k + 1)["pred_masks"]
        fused = segment_with_banks(sam, feats, banks)
        per_bank = [target_step(sam, feats, b, frame_idx=n, num_frames=n + 1)["pred_masks"] for b, n in banks]
    prob = np.mean([fs.readout(x, shape).probability for x in per_bank], axis=0)
    return {"single": fs.readout(single, shape).mask, "banks": fs.readout(fused, shape).mask, "banks_prob": prob > 0.5}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="SANSA checkpoint (default: the bundled demo model)")
    p.add_argument("--config", default="granseg_tiny.yaml")
    p.add_argument("--refs", type=int, nargs="+", default=[3, 7, 10, 14])
    p.add_argument("--sets", type=int, default=4, help="reference sets per class")
    p.add_argument("--targets", type=int, default=6, help="targets per reference set")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--objects", type=int, default=3, help="objects per scene (more: harder)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    import napari_granseg as gs
    from napari_granseg.engine.fewshot import FewShotSegmenter
    from napari_granseg.synthetic import shapes_scene

    ckpt = args.checkpoint or str(Path(gs.__file__).parent / "demo" / "sansa_demo.pt")
    model = gs.load_model(ckpt, kind="sansa", config=args.config, device="cpu")
    rng = np.random.default_rng(args.seed)
    kmax = max(args.refs)
    inter = {(m, k, c): 0 for m in METHODS for k in args.refs for c in (1, 2)}
    union = dict.fromkeys(inter, 0)
    for cls in (1, 2):
        for _ in range(args.sets):
            fs = FewShotSegmenter(model, image_size=None, precision="fp32")
            for _ in range(kmax):
                img, lab = shapes_scene(size=args.size, n_objects=args.objects, rng=rng)
                fs.add_reference(img, mask=lab == cls)
            memory = fs.memory()
            for _ in range(args.targets):
                img, lab = shapes_scene(size=args.size, n_objects=args.objects, rng=rng)
                tensor, shape = fs.prepare(img)
                feats = fs.encode(tensor)
                truth = lab == cls
                for k in args.refs:
                    for m, pred in _masks(fs, feats, memory, k, shape).items():
                        inter[m, k, cls] += int((pred & truth).sum())
                        union[m, k, cls] += int((pred | truth).sum())
    rows, capacity = [], int(model.module.sam.num_maskmem) - 1
    for k in args.refs:
        row = {"references": k, "banks": max(1, -(-(k - 1) // capacity))}
        for m in METHODS:
            row[f"mIoU_{m}"] = float(np.mean([inter[m, k, c] / max(1, union[m, k, c]) for c in (1, 2)]))
        rows.append(row)
    print(f"\nFew-shot mIoU vs number of references, {Path(ckpt).name}, {args.sets} sets x {args.targets} targets "
          f"per class, {args.size} px discs/triangles, {args.objects} objects per scene, fp32\n")
    write_report("fewshot_references", rows, ["references", "banks"] + [f"mIoU_{m}" for m in METHODS], args.out,
                 {"checkpoint": Path(ckpt).name, "sets": args.sets, "targets": args.targets, "size": args.size,
                  "objects": args.objects, "seed": args.seed})
    return rows


if __name__ == "__main__":
    main()

"""A broader stand-in for a released model: the demo UnSAMv2 trained further on several looks it never saw, to test
whether the fine-tuning benchmark's four-image gap comes from the demo's narrow pretraining (bright nested ellipses
only).

The looks, chosen before any fine-tuning result on them and unlike both benchmark domains (no outlined cells, no
rods): dark lobed blobs on a bright grainy background (``synthetic_domains.dark_blobs_scene``), a partition of the
image into textured regions of different brightness, and round or oval spots of either polarity on a sloping
background; 40 % of the scenes stay the demo's own nested cells (with its memory episodes), so it keeps what it
knew. Each object of the new looks is a whole object (g = 1.0). The model is built by the training package's own
trainer, from the bundled demo checkpoint; then::

    python benchmarks/broad_standin.py --steps 1500 --out standin.pt            # 15 min on 2 CPU threads
    python benchmarks/finetune.py --model standin.pt --config granseg_tiny.yaml --domain rods --configs default \
        --no-cost --threads 1 --out finetune_standin_rods.json
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from granseg_training.unsamv2.data import SyntheticNestedDataset, _subsample, prepare_sample
from granseg_training.unsamv2.recipes import demo_config
from granseg_training.unsamv2.trainer import UnSAMv2Trainer
from scipy import ndimage

import napari_granseg
from napari_granseg.synthetic_domains import dark_blobs_scene

NESTED_SHARE = 0.4


def textured_regions_scene(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """4-11 regions of the nearest of random seeds, each its own brightness and grain; no outlines between them."""
    seeds = rng.uniform(0, size, (int(rng.integers(4, 12)), 2))
    rr, cc = np.mgrid[:size, :size].astype(np.float32)
    owner = np.stack([np.hypot(rr - r, cc - c) for r, c in seeds]).argmin(0)
    img = np.zeros((size, size), np.float32)
    for k in range(len(seeds)):
        grain = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), rng.uniform(0.5, 3))
        inside = owner == k
        img[inside] = rng.uniform(0.1, 0.9) + rng.uniform(0.0, 0.15) * grain[inside] / (grain.std() + 1e-6)
    return img + rng.normal(0, rng.uniform(0.005, 0.04), img.shape), owner + 1


def spots_scene(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """3-8 round or oval spots (aspect at most 1.4), all brighter or all darker than a sloping background; a later
    spot covers an earlier one; spots left with 20 pixels or fewer are dropped."""
    rr, cc = np.mgrid[:size, :size].astype(np.float32)
    background = rng.uniform(0.2, 0.6) + rng.uniform(-0.15, 0.15, 2) @ np.stack([rr, cc]).reshape(2, -1) / size
    background = background.reshape(size, size)
    img, labels, sign = background.copy(), np.zeros((size, size), np.int32), rng.choice([-1, 1])
    for k in range(1, int(rng.integers(3, 9)) + 1):
        r = rng.uniform(0.04, 0.14) * size
        a, centre, t = r * rng.uniform(0.7, 1.4), rng.uniform(r, size - r, 2), rng.uniform(0, np.pi)
        y, x = rr - centre[0], cc - centre[1]
        inside = ((y * np.cos(t) + x * np.sin(t)) / r) ** 2 + ((x * np.cos(t) - y * np.sin(t)) / a) ** 2 <= 1
        img[inside] = background[inside] + sign * rng.uniform(0.15, 0.4) + rng.normal(0, 0.03, inside.sum())
        labels[inside] = k
    img = ndimage.gaussian_filter(img, rng.uniform(0.3, 1.2)) + rng.normal(0, 0.02, img.shape)
    kept = [k for k in np.unique(labels) if k and (labels == k).sum() > 20]
    return img, np.where(np.isin(labels, kept), np.searchsorted(kept, labels) + 1, 0).astype(np.int32)


class SeveralLooksDataset(SyntheticNestedDataset):
    """The demo's nested cells (NESTED_SHARE of the samples) or one of the three new looks, whole objects at g=1."""

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index, 7])
        if rng.random() < NESTED_SHARE:
            return super().__getitem__(index)
        look = int(rng.integers(3))
        if look == 0:
            img, lab = dark_blobs_scene(self.scene_size, int(rng.integers(3, 7)), seed=int(rng.integers(10**6, 10**9)))
        else:
            img, lab = (textured_regions_scene if look == 1 else spots_scene)(rng, self.scene_size)
        ids = [k for k in np.unique(lab) if k]
        sample = prepare_sample(img, [lab == k for k in ids], np.ones(len(ids), np.float32), self.image_size)
        return _subsample(sample, self.max_masks, rng)


class SeveralLooksTrainer(UnSAMv2Trainer):
    """The training package's trainer on :class:`SeveralLooksDataset`."""

    def build_dataset(self):
        c = self.cfg
        return SeveralLooksDataset(c.steps * c.batch_size, int(self.model.image_size), c.scene_size,
                                   tuple(c.n_cells), c.seed, c.max_masks)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--out", required=True, help="the checkpoint to write")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    demo = Path(napari_granseg.__file__).parent / "demo" / "unsamv2_demo.pt"
    out = Path(args.out).resolve()
    cfg = demo_config(out.parent / f"{out.stem}_run", seed=3, steps=args.steps, init_checkpoint=str(demo), lr=2e-4,
                      num_threads=args.threads, video_prob=0.3)
    trainer = SeveralLooksTrainer(cfg)
    t0 = time.perf_counter()
    history = trainer.fit()
    still = [h for h in history if not h.get("video")]
    print(f"{args.steps} steps in {time.perf_counter() - t0:.0f} s; click IoU on the training scenes, first / last "
          f"250 image steps: {np.mean([h['iou'] for h in still[:250]]):.3f} / {np.mean([h['iou'] for h in still[-250:]]):.3f}")
    print(trainer.save(out))


if __name__ == "__main__":
    main()

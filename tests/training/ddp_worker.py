"""Run by ``torchrun`` in test_unsamv2_ddp.py: trains the tiny UnSAMv2 for a few steps under DDP (gloo, CPU)
(image steps and memory episodes mixed) and writes, per rank, what the test compares: a hash of the weights after training and of the images seen.
``--empty-batch-on-rank1``: rank 1's second batch loses its masks (as an image whose pseudo-labels are all
filtered out would): both ranks must skip that step together and stay in step."""
from __future__ import annotations

import hashlib
import json
import os
import sys

import torch

from granseg_training.unsamv2 import UnSAMv2TrainConfig, UnSAMv2Trainer


def weights_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(out_dir: str, steps: int, empty_batch_on_rank1: bool) -> None:
    cfg = UnSAMv2TrainConfig(model_config="granseg_tiny.yaml", trainable="all", steps=steps, batch_size=1,
                             lr=1e-3, lr_min=1e-4, scene_size=64, n_cells=[1, 2], max_masks=4,
                             correction_clicks=1, video_prob=0.5, video_frames=2, device="cpu", num_threads=1,
                             out_dir=out_dir, progress=False, seed=3)
    trainer = UnSAMv2Trainer(cfg)
    initial = weights_digest(trainer.model)
    seen: list[str] = []
    step_once = trainer.train_step

    def recording_step(batch: dict) -> dict:
        if empty_batch_on_rank1 and trainer.rank == 1 and len(seen) == 1:
            batch = {**batch, "masks": [m[:0] for m in batch["masks"]],
                     "granularity": [g[:0] for g in batch["granularity"]]}
        seen.append(hashlib.sha256(batch["image"].numpy().tobytes()).hexdigest())
        return step_once(batch)

    trainer.train_step = recording_step
    history = trainer.fit()
    record = {"rank": trainer.rank, "world_size": trainer.world_size, "initial": initial,
              "final": weights_digest(trainer.model), "images": seen, "steps": len(history),
              "video": [r["video"] for r in history]}
    with open(os.path.join(out_dir, f"rank{trainer.rank}.json"), "w") as f:
        json.dump(record, f)
    if trainer.rank == 0:
        trainer.save()
    trainer.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), "--empty-batch-on-rank1" in sys.argv[3:])

"""Train demo-model recipe variants side by side on one GPU (each in its own process), keeping the latest
checkpoint of each in OUT/<variant>/latest.pt, and time-box them. Used to pick the bundled demo's recipe.

    python training/scripts/gpu_demo_sweep.py OUT SECONDS
"""
from __future__ import annotations

import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

VARIANTS = {
    "a_256_1to4_lr1e-3": dict(scene_size=256, n_cells=[1, 4], lr=1e-3, batch_size=8),
    "b_128_1to3_lr1e-3": dict(scene_size=128, n_cells=[1, 3], lr=1e-3, batch_size=8),
    "c_256_1to4_lr5e-4": dict(scene_size=256, n_cells=[1, 4], lr=5e-4, batch_size=8, warmup_steps=200),
}


def run(name: str, kw: dict, out: Path, seconds: float) -> None:
    import torch

    from granseg_training.unsamv2 import UnSAMv2TrainConfig, UnSAMv2Trainer

    base = dict(model_config="granseg_tiny.yaml", trainable="all", data="synthetic", lr_min=1e-5, warmup_steps=50,
                weight_decay=1e-5, correction_clicks=1, inner_click_prob=0.75, device="cuda", precision="fp32",
                seed=0, steps=5000, out_dir=str(out / name), progress=False, num_threads=4)
    base.update(kw)
    cfg = UnSAMv2TrainConfig.from_dict(base)
    trainer = UnSAMv2Trainer(cfg)
    t0 = time.time()
    log = []
    while time.time() - t0 < seconds and trainer.step < cfg.steps:
        hist = trainer.fit(steps=250)
        losses = [h["loss"] for h in hist[-50:]] if hist else []
        log.append({"step": trainer.step, "t": round(time.time() - t0, 1),
                    "loss": sum(losses) / max(len(losses), 1)})
        trainer.save(out / name / "latest.pt")
        (out / name / "log.json").write_text(json.dumps(log))
        print(name, log[-1], flush=True)
    del torch


if __name__ == "__main__":
    out, seconds = Path(sys.argv[1]), float(sys.argv[2])
    mp.set_start_method("spawn")
    procs = [mp.Process(target=run, args=(n, kw, out, seconds)) for n, kw in VARIANTS.items()]
    for p in procs:
        p.start()
    for p in procs:
        p.join()

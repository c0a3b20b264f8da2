#!/usr/bin/env bash
# GPU smoke test of the UnSAMv2 trainer: trains the tiny config on CUDA with bf16 autocast for N steps and
# prints images/s and peak GPU memory. Usage: training/scripts/gpu_smoke.sh [STEPS] [BATCH] [MODEL_CONFIG]
#   STEPS default 200, BATCH default 8, MODEL_CONFIG default granseg_tiny.yaml
#   (e.g. configs/sam2.1/sam2.1_hiera_s.yaml with TRAINABLE=upstream for the real model's shapes).
# Optional env: TRAINABLE (all|upstream, default all), CLICKS (correction clicks, default 3),
#   VIDEO_PROB (share of memory episodes, default 0), OUT (run dir).
set -euo pipefail
STEPS="${1:-200}"
BATCH="${2:-8}"
MODEL_CONFIG="${3:-granseg_tiny.yaml}"
PY="${PYTHON:-python}"
exec "$PY" - "$STEPS" "$BATCH" "$MODEL_CONFIG" <<'PYEOF'
import json, os, sys, tempfile, time
import torch
from granseg_training.unsamv2 import UnSAMv2TrainConfig, UnSAMv2Trainer

steps, batch, model_config = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if not torch.cuda.is_available():
    sys.exit("CUDA is not available: this smoke test is for a GPU machine")
out = os.environ.get("OUT") or tempfile.mkdtemp(prefix="unsamv2_gpu_smoke_")
cfg = UnSAMv2TrainConfig(model_config=model_config, trainable=os.environ.get("TRAINABLE", "all"),
                         steps=steps, batch_size=batch, lr=3e-4, lr_min=3e-5, warmup_steps=20,
                         correction_clicks=int(os.environ.get("CLICKS", "3")), inner_click_prob=0.5,
                         scene_size=256, n_cells=[1, 4], video_prob=float(os.environ.get("VIDEO_PROB", "0")), device="cuda", precision="bf16", num_workers=4,
                         out_dir=out, progress=True)
trainer = UnSAMv2Trainer(cfg)
warm = min(10, steps // 4)
trainer.fit(steps=warm)
torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
t0 = time.perf_counter()
hist = trainer.fit()
torch.cuda.synchronize()
dt = time.perf_counter() - t0
n = steps - warm
path = trainer.save()
res = {"device": torch.cuda.get_device_name(), "model_config": model_config, "trainable": cfg.trainable,
       "video_prob": cfg.video_prob,
       "steps_timed": n, "batch": batch, "bf16": torch.cuda.is_bf16_supported(),
       "images_per_s": round(n * batch / dt, 1), "s_per_step": round(dt / max(n, 1), 4),
       "peak_mem_MiB": round(torch.cuda.max_memory_allocated() / 2**20, 1),
       "loss_first10": round(sum(r["loss"] for r in hist[:10]) / 10, 4),
       "loss_last10": round(sum(r["loss"] for r in hist[-10:]) / 10, 4), "checkpoint": str(path)}
print(json.dumps(res, indent=2))
PYEOF

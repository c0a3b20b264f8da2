"""Episodic SANSA training: k references (1..shots) + 1 query per episode, SAM 2 memory as in inference.

The episode runs through the same functions as the inference engine (``napari_granseg.engine.episode``:
``build_memory`` / ``target_step``) and images and masks are prepared by the engine's input functions
(``napari_granseg.engine.fewshot_input``), so training and inference see identical inputs and frame roles.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_granseg.checkpoints import save_checkpoint
from napari_granseg.engine.episode import build_memory, target_step
from napari_granseg.engine.fewshot_input import preprocess_image, preprocess_mask
from napari_granseg.loading import load_sansa
from napari_granseg.models.sansa import SansaModel, sansa_adapter_state_dict

from ..schedule import warmup_cosine_factor, warmup_cosine_schedule
from ..seeding import seed_everything
from .config import SansaTrainConfig
from .data import Episode, make_episodes
from .episodes import encode_batch, split_batch
from .losses import sansa_loss
from .prompts import PROMPT_KINDS, mask_box, point_inputs, sample_points, sample_scribble

__all__ = ["SansaTrainer", "train_sansa"]

log = logging.getLogger(__name__)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class SansaTrainer:
    """Builds the model from ``cfg``, samples episodes, optimises, saves checkpoints."""

    def __init__(self, cfg: SansaTrainConfig, model: SansaModel | None = None):
        self.cfg = cfg
        seed_everything(cfg.seed)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.device = _device(cfg.device)
        self.model = model if model is not None else load_sansa(
            cfg.model_config, base_checkpoint=cfg.base_checkpoint, adapter_checkpoint=cfg.init_adapters,
            channel_factor=None if cfg.init_adapters else cfg.channel_factor, overrides=cfg.overrides)
        self.model.to(self.device)
        self.n_trainable = self.model.set_trainable(cfg.trainable)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        self.scheduler = warmup_cosine_schedule(self.optimizer, cfg.steps, cfg.warmup_steps, cfg.lr_min)
        self.episodes = make_episodes(cfg)
        self.rng = np.random.default_rng(cfg.seed)
        self.step = 0
        self.history: list[dict[str, float]] = []
        log.info("SANSA training: %d trainable parameters (%s)", self.n_trainable, cfg.trainable)

    @property
    def sam(self):
        return self.model.sam

    def lr_at(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (linear warm-up, then cosine to lr_min; see schedule)."""
        cfg = self.cfg
        return cfg.lr * warmup_cosine_factor(step, cfg.steps, cfg.warmup_steps, cfg.lr, cfg.lr_min)

    # ------------------------------------------------------------------------------------------ batching
    def _frame_tensors(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        size = self.model.image_size
        img = preprocess_image(image, size, self.cfg.image_size, self.device)
        prompt_mask = preprocess_mask(mask, size, self.device, self.cfg.image_size)
        loss_size = self.cfg.loss_size or size
        gt = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None].to(self.device),
                           size=(loss_size, loss_size), mode="bilinear", align_corners=False, antialias=True) > 0.5
        return img, prompt_mask, gt

    def batch(self) -> dict:
        """B episodes with the same number of frames T = k + 1, k in 1..shots."""
        cfg = self.cfg
        k = int(self.rng.integers(1, cfg.shots + 1))
        eps: list[Episode] = [self.episodes.sample(k + 1, self.rng) for _ in range(cfg.batch_size)]
        images, prompt_masks, gts = [], [], []
        for t in range(k + 1):  # frame-major: all episodes' frame t together
            frame = [self._frame_tensors(e.images[t], e.masks[t]) for e in eps]
            images.append(torch.cat([f[0] for f in frame]))
            prompt_masks.append(torch.cat([f[1] for f in frame]))
            gts.append(torch.cat([f[2] for f in frame]))
        prompts = []
        for t in range(k):
            kind = "mask" if cfg.prompt == "mask" else PROMPT_KINDS[int(self.rng.integers(len(PROMPT_KINDS)))]
            prompts.append(self._prompt(kind, [e.masks[t] for e in eps], prompt_masks[t]))
        return {"images": torch.cat(images), "prompts": prompts, "gts": gts, "k": k, "B": len(eps)}

    def _prompt(self, kind: str, masks: list[np.ndarray], prompt_mask: torch.Tensor) -> dict:
        if kind == "mask":
            return {"kind": kind, "mask_inputs": prompt_mask, "point_inputs": None}
        shapes = [m.shape for m in masks]
        if kind == "points":
            n = int(self.rng.integers(1, 21))
            coords = [sample_points(m, n, self.rng) for m in masks]
            labels = [np.ones(n, np.int32)] * len(masks)
        elif kind == "scribble":
            n = int(self.rng.integers(5, 21))
            coords = [sample_scribble(m, n, self.rng) for m in masks]
            labels = [np.ones(n, np.int32)] * len(masks)
        else:
            coords = [mask_box(m) for m in masks]
            labels = [np.array([2, 3], np.int32)] * len(masks)
        return {"kind": kind, "mask_inputs": None,
                "point_inputs": point_inputs(coords, labels, shapes, self.model.image_size, self.device)}

    # ----------------------------------------------------------------------------------------- one step
    def episode_logits(self, batch: dict) -> list[torch.Tensor]:
        """Low-res logits (B, 1, h, w) of frames 0..T-1 (references' own outputs, then the query)."""
        k, B = batch["k"], batch["B"]
        feats = split_batch(encode_batch(self.sam, batch["images"]), B)
        memory, ref_outs = build_memory(self.sam, feats[:k], batch["prompts"], k + 1)
        query = target_step(self.sam, feats[k], memory, frame_idx=k, num_frames=k + 1)
        return [o["pred_masks"] for o in ref_outs] + [query["pred_masks"]]

    def train_step(self, batch: dict) -> dict[str, float]:
        self.model.train()
        logits = self.episode_logits(batch)
        all_mask = all(p["kind"] == "mask" for p in batch["prompts"])
        first = 1 if all_mask else 0  # mask-prompted frame 0 just echoes its mask: no loss there (upstream)
        pred = torch.cat(logits[first:])
        gt = torch.cat(batch["gts"][first:])
        losses = sansa_loss(pred, gt, self.cfg.focal_weight, self.cfg.dice_weight)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.cfg.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            q = logits[-1]
            q = F.interpolate(q, size=batch["gts"][-1].shape[-2:], mode="bilinear", align_corners=False) > 0
            g = batch["gts"][-1]
            iou = ((q & g).flatten(1).sum(1).float() / (q | g).flatten(1).sum(1).clamp(min=1).float()).mean()
        self.step += 1
        return {"step": self.step, "lr": lr, "loss": float(losses["loss"].detach()),
                "focal": float(losses["focal"].detach()), "dice": float(losses["dice"].detach()), "query_iou": float(iou)}

    def fit(self, steps: int | None = None) -> list[dict[str, float]]:
        steps = self.cfg.steps if steps is None else steps
        bar = None
        if self.cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, desc="sansa", unit="step")
        t0 = time.time()
        for _ in range(steps):
            rec = self.train_step(self.batch())
            rec["time_s"] = round(time.time() - t0, 2)
            self.history.append(rec)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", iou=f"{rec['query_iou']:.2f}")
            if self.cfg.log_every and self.step % self.cfg.log_every == 0:
                recent = self.history[-self.cfg.log_every:]
                log.info("step %d loss %.4f query IoU %.3f", self.step, np.mean([r["loss"] for r in recent]),
                         np.mean([r["query_iou"] for r in recent]))
        if bar is not None:
            bar.close()
        self.model.eval()
        return self.history

    # ------------------------------------------------------------------------------------------- saving
    def save(self, path: str | Path | None = None) -> Path:
        """Save in the upstream layout ``{'model': adapters}``; from-scratch (trainable='all') runs save the
        whole model in the main file (it loads as adapter file and as base) plus ``*_adapters.pth``.

        Returns the main checkpoint path; a ``.json`` sidecar records the config and the loss history.
        """
        cfg = self.cfg
        path = Path(path) if path is not None else Path(cfg.out_dir) / cfg.checkpoint_name
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"config": cfg.model_config, "channel_factor": float(self.model.channel_factor or 0.0),
                "trainable": cfg.trainable, "steps": int(self.step)}
        adapters = sansa_adapter_state_dict(self.model)
        if cfg.trainable == "all":
            full = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            save_checkpoint(full, path, sansa=meta)
            save_checkpoint(adapters, path.with_name(path.stem + "_adapters.pth"), sansa=meta)
        else:
            save_checkpoint(adapters, path, sansa=meta)
        sidecar = {"train_config": cfg.to_dict(), "meta": meta, "history": self.history}
        path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1, default=str))
        return path


def train_sansa(config: SansaTrainConfig) -> Path:
    """Train per ``config`` and return the saved checkpoint path."""
    trainer = SansaTrainer(config)
    trainer.fit()
    return trainer.save()

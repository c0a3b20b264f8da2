"""The UnSAMv2 trainer: images as one-frame videos, clicks + granularity -> one mask, SAM 2's losses.

Per step and image: the encoder runs once (``SAM2Base.forward_image`` + ``_prepare_backbone_features``, as for
a video's first frame, with ``no_mem_embed`` added); each of up to ``max_masks`` masks gets its stored g, one
positive click inside it, then up to ``correction_clicks`` clicks sampled from the error of the previous
prediction, whose low-res logits are fed back as the mask prompt (multimask off). The loss of every pass is
averaged. ``trainable='upstream'`` trains only the granularity modules and LoRA (UnSAMv2's recipe);
``'all'`` trains every weight (tiny models from scratch). Under ``torchrun`` (WORLD_SIZE > 1) the step runs
inside DistributedDataParallel with a DistributedSampler. With ``video_prob`` > 0 a share of the steps are
memory episodes (:meth:`_TrainStep.memory_episode`: the image drifts over a few frames and SAM 2's tracking
step follows the clicked objects from memory), so models trained from scratch learn to propagate. Checkpoints
keep LoRA unmerged (upstream layout), so ``napari_granseg.load_model(path, kind='unsamv2', config=...)`` reads
them and merges LoRA.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import time
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from napari_granseg.checkpoints import read_state_dict, save_checkpoint
from napari_granseg.devices import precision_context, resolve_device
from napari_granseg.engine.normalize import IMAGENET_MEAN, IMAGENET_STD
from napari_granseg.finetuning.clicks import correction_clicks, first_clicks
from napari_granseg.finetuning.losses import dice_loss, mask_iou, sigmoid_focal_loss, unsamv2_loss
from napari_granseg.finetuning.params import GRANULARITY_PARAM_KEYS, is_upstream_trainable
from napari_granseg.models.unsamv2 import (UnSAMv2Model, build_unsamv2, load_unsamv2_state_dict,
                                           unsamv2_state_dict)

from .augment import JointAugment
from .config import UnSAMv2TrainConfig
from ..schedule import warmup_cosine_schedule
from ..seeding import seed_everything
from .data import CocoGranularityDataset, SyntheticNestedDataset, collate_samples
from .video import drifting_video

__all__ = ["UnSAMv2Trainer", "train_unsamv2", "GRANULARITY_PARAM_KEYS", "is_upstream_trainable",
           "image_features", "decode"]

def image_features(model: UnSAMv2Model, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(B, 3, S, S) normalised images -> image embedding (B, C, S/16, S/16) and high-res features."""
    backbone_out = model.forward_image(images)
    _, vision_feats, _, _ = model._prepare_backbone_features(backbone_out)
    if model.directly_add_no_mem_embed:
        vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
    s, b = int(model.image_size), images.shape[0]
    sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    feats = [f.permute(1, 2, 0).reshape(b, -1, *hw) for f, hw in zip(vision_feats, sizes)]
    return feats[-1], feats[:-1]


def decode(model: UnSAMv2Model, image_embed: torch.Tensor, high_res: list[torch.Tensor], coords: torch.Tensor,
           labels: torch.Tensor, mask_input: torch.Tensor | None, granularity: torch.Tensor):
    """One decoder pass for M prompts (features already gathered per prompt): low-res logits, IoU, object logit."""
    pe = model.sam_prompt_encoder
    sparse, dense = pe(points=(coords, labels), boxes=None, masks=mask_input, granularity=granularity)
    low, iou, _, obj = model.sam_mask_decoder(
        image_embeddings=image_embed, image_pe=pe.get_dense_pe(), sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense, multimask_output=False, repeat_image=False, high_res_features=high_res)
    return low, iou, obj


class _TrainStep(nn.Module):
    """The whole click-simulation forward as ONE module call, so DistributedDataParallel can wrap it."""

    def __init__(self, model: UnSAMv2Model, cfg: UnSAMv2TrainConfig):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, masks: list[torch.Tensor], granularity: list[torch.Tensor],
                n_corrections: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Image step for (B, 3, S, S) images and (M_i, S, S) masks; memory episode for (B, T, 3, S, S)
        frames and (M_i, T, S, S) masks (see :meth:`memory_episode`)."""
        if images.dim() == 5:
            return self.memory_episode(images, masks, granularity, generator)
        cfg, model = self.cfg, self.model
        images = (images - self.mean) / self.std
        encoder_grad = cfg.trainable == "all" and torch.is_grad_enabled()
        with torch.set_grad_enabled(encoder_grad):
            image_embed, high_res = image_features(model, images)
        owner = torch.cat([torch.full((len(m),), i, dtype=torch.long) for i, m in enumerate(masks)]).to(images.device)
        target = torch.cat(masks).to(images.device)
        g = torch.cat(granularity).to(images.device).float()
        emb = image_embed[owner]
        hr = [f[owner] for f in high_res]
        coords_l, labels_l = [], []
        for i, m in enumerate(masks):
            c, lab = first_clicks(m.to(images.device), cfg.inner_click_prob, generator)
            coords_l.append(c)
            labels_l.append(lab)
        coords, labels = torch.cat(coords_l), torch.cat(labels_l)
        size = target.shape[-2:]
        mask_input, totals = None, []
        for it in range(1 + n_corrections):
            low, iou_pred, obj = decode(model, emb, hr, coords, labels, mask_input, g)
            logits = F.interpolate(low.float(), size=size, mode="bilinear", align_corners=False)[:, 0]
            totals.append(unsamv2_loss(logits, iou_pred, obj, target, cfg.loss))
            if it < n_corrections:
                c, lab = correction_clicks(logits.detach() > 0, target, generator)
                coords, labels = torch.cat([coords, c], 1), torch.cat([labels, lab], 1)
                mask_input = low.detach().float()
        out = {k: torch.stack([t[k] for t in totals]).mean() for k in totals[0]}
        out["n_masks"] = torch.tensor(float(len(target)))
        return out

    def memory_episode(self, frames: torch.Tensor, masks: list[torch.Tensor], granularity: list[torch.Tensor],
                       generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One click + g on frame 0, then SAM 2's own tracking step (``SAM2Base.track_step``, the code the
        video predictor runs) on frames 1..T-1 from memory alone; focal + dice on every frame.

        This trains the memory encoder, memory attention and object pointers, which single images never
        reach. Every object of the batch is one tracked object; g is set for all frames, as in propagation.
        """
        cfg, model = self.cfg, self.model
        t_len = frames.shape[1]
        x = (frames.flatten(0, 1) - self.mean) / self.std
        with torch.set_grad_enabled(cfg.trainable == "all" and torch.is_grad_enabled()):
            backbone_out = model.forward_image(x)
        _, vision_feats, vision_pos, feat_sizes = model._prepare_backbone_features(backbone_out)
        owner = torch.cat([torch.full((len(m),), i, dtype=torch.long) for i, m in enumerate(masks)]).to(x.device)
        target = torch.cat(masks).to(x.device).float()  # (M, T, S, S)
        g = torch.cat(granularity).to(x.device).float()
        clicks = [first_clicks(m[:, 0].to(x.device), cfg.inner_click_prob, generator) for m in masks]
        point_inputs = {"point_coords": torch.cat([c for c, _ in clicks]),
                        "point_labels": torch.cat([lab for _, lab in clicks])}
        memory: dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        focal, dice, iou = [], [], []
        with model.granularity_context(g):
            for t in range(t_len):
                idx = owner * t_len + t
                out = model.track_step(
                    frame_idx=t, is_init_cond_frame=t == 0, current_vision_feats=[f[:, idx] for f in vision_feats],
                    current_vision_pos_embeds=[p[:, idx] for p in vision_pos], feat_sizes=feat_sizes,
                    point_inputs=point_inputs if t == 0 else None, mask_inputs=None, output_dict=memory,
                    num_frames=t_len, run_mem_encoder=t < t_len - 1)
                memory["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = out
                logits = out["pred_masks_high_res"][:, 0].float()
                if logits.shape[-2:] != target.shape[-2:]:
                    logits = F.interpolate(logits[:, None], size=target.shape[-2:], mode="bilinear",
                                           align_corners=False)[:, 0]
                focal.append(sigmoid_focal_loss(logits, target[:, t]).mean())
                dice.append(dice_loss(logits, target[:, t]).mean())
                iou.append(mask_iou(logits.detach() > 0, target[:, t] > 0.5).mean())
        focal_t, dice_t = torch.stack(focal).mean(), torch.stack(dice).mean()
        loss = cfg.loss.focal * focal_t + cfg.loss.dice * dice_t
        return {"loss": loss, "focal": focal_t.detach(), "dice": dice_t.detach(), "iou": torch.stack(iou).mean(),
                "iou_tracked": torch.stack(iou[1:]).mean(), "n_masks": torch.tensor(float(len(target)))}


class UnSAMv2Trainer:
    """Builds the model, data and optimiser from a config; :meth:`fit` trains, :meth:`save` writes a checkpoint.

    ``history`` holds one dict of floats per step (also written as JSON lines to ``out_dir/train_log.jsonl``).
    """

    def __init__(self, cfg: UnSAMv2TrainConfig):
        self.cfg = cfg
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.distributed = self.world_size > 1
        if self.distributed:
            import torch.distributed as dist

            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            if torch.cuda.is_available():
                torch.cuda.set_device(local_rank)
                self.device = torch.device("cuda", local_rank)
            else:
                self.device = torch.device("cpu")
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
        else:
            self.device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        self.model = build_unsamv2(cfg.model_config, overrides=cfg.overrides, device="cpu", lora=cfg.lora,
                                   lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha)
        if cfg.init_checkpoint:
            self._load_init(cfg.init_checkpoint)
        self.model.to(self.device)
        for name, p in self.model.named_parameters():
            p.requires_grad_(cfg.trainable == "all" or is_upstream_trainable(name))
        self.trainable_names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self.step_module: nn.Module = _TrainStep(self.model, cfg).to(self.device)
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.step_module = DistributedDataParallel(
                self.step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = warmup_cosine_schedule(self.optimizer, cfg.steps, cfg.warmup_steps, cfg.lr_min)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(cfg.seed * 1000 + self.rank)
        self.py_rng = random.Random(cfg.seed * 1000 + self.rank)
        self.episode_rng = random.Random(cfg.seed)  # the same on every rank: all ranks take the same kind of step
        self.out_dir = Path(cfg.out_dir)
        self.history: list[dict[str, float]] = []
        self.step = 0

    # ------------------------------------------------------------------ setup
    def _load_init(self, path: str) -> None:
        """Start from a SAM 2.1 (or UnSAMv2) checkpoint; granularity modules absent from it stay random."""
        state = read_state_dict(path, "initial checkpoint")
        own = self.model.state_dict()
        for key in own:
            if key.startswith(GRANULARITY_PARAM_KEYS) and key not in state:
                state[key] = own[key]
        load_unsamv2_state_dict(self.model, state, source=str(path), lora_alpha=self.cfg.lora_alpha)

    def build_dataset(self):
        cfg = self.cfg
        augment = JointAugment(cfg.augment) if cfg.augment.enabled else None
        size = int(self.model.image_size)
        if cfg.data == "coco":
            return CocoGranularityDataset(cfg.coco_json, size, cfg.image_root, cfg.max_masks, augment, cfg.seed)
        length = cfg.steps * cfg.batch_size * self.world_size
        return SyntheticNestedDataset(length, size, cfg.scene_size, tuple(cfg.n_cells), cfg.seed, cfg.max_masks,
                                      augment)

    def batches(self) -> Iterator[dict]:
        """Endless batches (epochs re-seed the sampler and the dataset's per-sample generators)."""
        from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

        cfg = self.cfg
        dataset = self.build_dataset()
        gen = torch.Generator()
        gen.manual_seed(cfg.seed)
        sampler = (DistributedSampler(dataset, shuffle=True, seed=cfg.seed) if self.distributed
                   else RandomSampler(dataset, generator=gen))
        loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                            collate_fn=collate_samples, drop_last=len(dataset) >= cfg.batch_size,
                            pin_memory=self.device.type == "cuda")
        epoch = 0
        while True:
            if self.distributed:
                sampler.set_epoch(epoch)
            dataset.epoch = epoch
            for batch in loader:
                yield batch
            epoch += 1

    def _autocast(self):
        """The step's autocast: :func:`napari_granseg.devices.precision_context` with the config's precision,
        where "auto" means bf16 on CUDA GPUs that have it (upstream trains so) and float32 elsewhere. Unlike
        inference's "auto", a CPU with native bf16 still trains in float32, so the recipes' CPU runs (the test
        fixture, the demo builds) do not change with the CPU's bf16 support."""
        precision = self.cfg.precision
        if precision == "auto":
            cuda_bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
            precision = "bf16" if cuda_bf16 else "fp32"
        return precision_context(self.device, precision)

    # ------------------------------------------------------------------ training
    def _every_rank_has_masks(self, n_masks: int) -> bool:
        """Whether this batch (on every rank) has masks to train on.

        An image can end up without masks (all pseudo-labels below ``min_area`` or cropped away). Under DDP
        a rank that skipped its step alone would pair its next batch's gradients with the other ranks'
        current batch and fall out of step with them (and its sampler shard); the ranks agree first and
        skip the step together.
        """
        if not self.distributed:
            return n_masks > 0
        import torch.distributed as dist

        count = torch.tensor([n_masks], device=self.device)
        dist.all_reduce(count, op=dist.ReduceOp.MIN)
        return int(count) > 0

    def train_step(self, batch: dict) -> dict[str, float]:
        cfg = self.cfg
        self.model.train()
        video = cfg.video_prob > 0 and self.episode_rng.random() < cfg.video_prob
        n_corr = self.py_rng.randint(0, cfg.correction_clicks) if cfg.random_corrections else cfg.correction_clicks
        images = batch["image"].to(self.device, non_blocking=True)
        masks = [m.to(self.device) for m in batch["masks"]]
        if not self._every_rank_has_masks(sum(len(m) for m in masks)):
            return {}
        granularity = batch["granularity"]
        if video:
            images, masks, granularity = drifting_video(images, masks, granularity, cfg.video_frames,
                                                        cfg.video_max_drift, cfg.video_objects, self.py_rng,
                                                        self.generator)
        with self._autocast():
            out = self.step_module(images, masks, granularity, n_corr, self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        rec = {k: float(v.detach()) for k, v in out.items()}
        rec["lr"] = self.optimizer.param_groups[0]["lr"]
        rec["clicks"] = 1.0 if video else 1 + n_corr
        rec["video"] = float(video)
        return rec

    def fit(self, steps: int | None = None) -> list[dict[str, float]]:
        """Train for ``steps`` (default ``cfg.steps``); returns the per-step log records."""
        cfg = self.cfg
        steps = cfg.steps if steps is None else steps
        main = self.rank == 0
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.out_dir / "train_log.jsonl"
        bar = None
        if cfg.progress and main:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, desc="unsamv2", unit="step")
        t0 = time.perf_counter()
        batches = self.batches()
        with (open(log_path, "a") if main else contextlib.nullcontext()) as log:
            while self.step < steps:
                rec = self.train_step(next(batches))
                if not rec:
                    continue
                self.step += 1
                rec.update(step=self.step, time_s=round(time.perf_counter() - t0, 3))
                self.history.append(rec)
                if main and self.step % cfg.log_every == 0:
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{rec['loss']:.3f}", iou=f"{rec['iou']:.2f}")
                if main and cfg.save_every and self.step % cfg.save_every == 0:
                    self.save(self.out_dir / f"step{self.step:06d}_{cfg.checkpoint_name}")
        if bar is not None:
            bar.close()
        self.model.eval()
        return self.history

    def save(self, path: str | Path | None = None, dtype: torch.dtype | None = None) -> Path:
        """Write ``{'model': state_dict}`` in upstream layout (LoRA unmerged); ``dtype`` e.g. float16 to shrink."""
        path = Path(path) if path else self.out_dir / self.cfg.checkpoint_name
        path.parent.mkdir(parents=True, exist_ok=True)
        state = unsamv2_state_dict(self.model)
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        info = json.dumps({"granseg_train": "unsamv2", "step": self.step, "config": self.cfg.to_dict()})
        return save_checkpoint(state, path, train_info=info)

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()


def train_unsamv2(cfg: UnSAMv2TrainConfig) -> Path:
    """Train with ``cfg`` and return the final checkpoint path (written by rank 0)."""
    trainer = UnSAMv2Trainer(cfg)
    try:
        trainer.fit()
        path = Path(cfg.out_dir) / cfg.checkpoint_name
        if trainer.rank == 0:
            trainer.save(path)
        return path
    finally:
        trainer.close()

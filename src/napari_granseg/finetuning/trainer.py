"""Fine-tune an UnSAMv2 model on a person's labels: decoder-side weights always, image-encoder weights by choice.

How a run goes (:class:`Finetuner`):

1. Each training image, in each of its flips/rotations (``augment``), is encoded ONCE by the base model's
   encoder, through the same predictor path (intensity scaling, precision) that segmentation uses. With a frozen
   encoder these features are what the trained decoder reads on every step; when the encoder trains
   (``encoder``: "auto", "last_stage", "all"), the model input is kept and the trained encoder encodes it on
   every step (``engine.features.image_features``, the predictor's own feature path), while the cached base
   features serve the teacher.
2. A copy of the base model gets LoRA (rank 8) in its mask decoder's transformer, UnSAMv2's own recipe. What
   trains (``trainable``): "lora" = LoRA + the granularity encoder and output token (UnSAMv2's trainable set);
   "decoder" = also every other prompt-encoder and mask-decoder weight (SAM's heads).
3. Each step takes one image variant and up to ``objects_per_step`` of its trained objects: a first click drawn
   towards each object's centre, the object's mask at the labels' granularity as target, then up to
   ``corrections`` corrective clicks from the error with the previous logits fed back (UnSAMv2's click
   simulation), UnSAMv2's loss (:mod:`.losses`).
4. Against forgetting, each step also matches the base model's own masks on ``replay_per_step`` images of
   what it knew (``keep_images``; the demo's own synthetic scenes for the demo), clicking where objects stand
   out from the background, half of the clicks at the labels' granularity (where training moves the model) and
   half at any; optionally on the training images at other granularities too (``keep_on_training``), and
   optionally with the changed weights pulled towards the base (``anchor_weight``, an L2 on the change; off by
   default: on the development domain it cost the new domain 0.03 and held nothing the replay did not).
5. Training runs at ``precision`` ("auto": bf16 where segmentation runs in bf16), the precision the model
   will run at, so its score holds at the default precision.

Cancel raises :class:`FinetuneCancelled` between steps; nothing of the run is kept.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..devices import precision_context
from ..models.loaded import LoadedModel
from ..models.lora import inject_lora
from ..models.unsamv2 import lora_target_names
from .clicks import correction_clicks, sample_in_masks
from .data import centre_weights, dihedral, foreground_weights, target_labels
from .losses import LossWeights, dice_loss, unsamv2_loss
from .params import (encoder_param_filter, is_decoder_param, is_upstream_trainable, resolve_encoder_choice,
                     resolve_step_work)

__all__ = ["FinetuneSettings", "Finetuner", "FinetuneCancelled", "ProgressFn", "CancelFn", "ENCODER_CHOICES"]

#: Which image-encoder weights train: none (features computed once per image), the last trunk stage and the
#: neck, or all of it (every step then runs the encoder forward and backward).
ENCODER_CHOICES = ("auto", "frozen", "last_stage", "all")

#: progress(step, total, loss, eta_seconds)
ProgressFn = Callable[[int, int, float, float], None]
CancelFn = Callable[[], bool]


class FinetuneCancelled(RuntimeError):
    """Raised when the cancel callback says stop; nothing was written."""


@dataclass
class FinetuneSettings:
    """The recipe. Defaults were chosen on a synthetic development domain (see docs/finetune.md)."""

    steps: int | None = None           # None: finetune() picks run.default_steps (objects, images)
    lr: float = 1e-3
    trainable: str = "decoder"         # "decoder" | "lora" (UnSAMv2's own trainable set, less capacity)
    encoder: str = "auto"              # "auto" | "frozen" | "last_stage" | "all": encoder weights that train too
    encoder_lr: float = 1e-3           # the encoder's learning rate
    objects_per_step: int | None = None  # objects per step (None: 8, or 4 for a released-size model off a GPU)
    corrections: int | None = None     # up to this many corrective clicks per object, random 0..n (None: 1, or 0
                                       # for a released-size model off a GPU: params.resolve_step_work)
    centre_power: float = 1.0          # first clicks ~ (distance to the border) ** power
    augment: int = 8                   # flips/rotations per image: 1, 2, 4 or 8
    held_fraction: float = 0.15
    keep_weight: float = 1.0           # match the base model on replay images (and training images, below)
    keep_gap: float = 0.2              # ... at least this far from the labels' granularity
    keep_on_training: bool = False     # the base as teacher on the training images too (other granularities)
    keep_clicks: str = "foreground"    # where the keep term clicks: "foreground" or "uniform"
    replay_per_step: int = 1           # replay images (keep_images) the keep term visits per step
    replay_augment: int = 4            # flips/rotations of each replay image
    replay_label_g: float = 0.5        # share of replay clicks at the labels' granularity (the rest: any g)
    anchor_weight: float = 0.0         # L2 of the weight change (0: off)
    loss_side: int = 256               # the loss is computed with the longer side at most this
    precision: str = "auto"
    seed: int = 0
    loss: LossWeights = field(default_factory=LossWeights)

    def check(self) -> None:
        if self.trainable not in ("lora", "decoder"):
            raise ValueError(f"trainable={self.trainable!r}: use 'lora' (UnSAMv2's recipe) or 'decoder'")
        if self.encoder not in ENCODER_CHOICES:
            raise ValueError(f"encoder={self.encoder!r}: use one of {ENCODER_CHOICES}")
        if self.augment not in (1, 2, 4, 8):
            raise ValueError(f"augment={self.augment}: use 1, 2, 4 or 8 flips/rotations per image")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps={self.steps}: train at least one step (or None: from the labelled objects)")
        if self.objects_per_step is not None and self.objects_per_step < 1:
            raise ValueError(f"objects_per_step={self.objects_per_step}: use at least 1 (or None: auto)")
        if self.corrections is not None and self.corrections < 0:
            raise ValueError(f"corrections={self.corrections}: use 0 or more (or None: auto)")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Variant:
    """One flip/rotation of one training image: its features and its labels at loss resolution."""

    image: int
    features: dict             # the base model's features (the teacher's; the student's too when frozen)
    inputs: torch.Tensor | None  # the model input, kept when the encoder trains (features change each step)
    click_weights: torch.Tensor | None  # (h, w) where the keep term clicks (None: uniform)
    labels: torch.Tensor       # (h, w) int32
    objects: list[int]         # trained label ids present
    size: tuple[int, int]      # (h, w) of the loss resolution


class Finetuner:
    """Holds the frozen base, the trainable copy and the cached embeddings; :meth:`fit` trains.

    ``base``: a LoadedModel of kind "unsamv2" (not changed). ``train_objects``: ``(image, label id)`` pairs to
    train on; the others are never shown.
    """

    def __init__(self, base: LoadedModel, images: list[np.ndarray], labels: list[np.ndarray],
                 train_objects: list[tuple[int, int]], granularity: float, settings: FinetuneSettings,
                 keep_images: list[np.ndarray] | None = None):
        settings.check()
        if settings.steps is None:
            raise ValueError("steps=None: the Finetuner trains a given number of steps; finetune() picks them from "
                             "the labelled objects (run.default_steps)")
        objects, corrections = resolve_step_work(settings.objects_per_step, settings.corrections, base.module,
                                                 base.device)
        settings = replace(settings, objects_per_step=objects, corrections=corrections)
        self.base, self.settings, self.granularity = base, settings, float(granularity)
        self.device = base.device
        self.encoder_choice = resolve_encoder_choice(settings.encoder, base.module, base.device)
        self.variants = self._encode(images, labels, train_objects)
        self.replay = self._encode_replay(keep_images or [])
        self.model = self._trainable_copy(base.module)
        self.params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        self.start = {n: p.detach().clone() for n, p in self.params.items() if not n.endswith(".lora_B")}
        self.history: list[dict] = []
        self.generator = torch.Generator(device="cpu").manual_seed(settings.seed)
        self.rng = np.random.default_rng(settings.seed)

    # ------------------------------------------------------------------ setup
    def _encode(self, images, labels, train_objects) -> list[_Variant]:
        from ..engine.interactive import GranularityPredictor

        pred = GranularityPredictor(self.base, precision=self.settings.precision, cache_size=1)
        wanted = {}
        for i, k in train_objects:
            wanted.setdefault(i, []).append(k)
        variants = []
        for i, ids in sorted(wanted.items()):
            for k in range(self.settings.augment):
                img = dihedral(images[i], k if self.settings.augment > 1 else 0)
                lab = dihedral(labels[i], k if self.settings.augment > 1 else 0)
                feats, inputs = self._base_features(pred, img)
                small = target_labels(lab, self.settings.loss_side)
                present = [int(x) for x in ids if bool((small.labels == x).any())]
                if present:
                    variants.append(_Variant(i, feats, inputs, self._click_weights(img, small.labels.shape),
                                             small.labels.to(self.device), present,
                                             tuple(small.labels.shape)))
        if not variants:
            raise ValueError("no trained object is large enough to be seen at the loss resolution")
        return variants

    def _encode_replay(self, images: list[np.ndarray]) -> list[_Variant]:
        """Images the base model should keep segmenting as it does (no labels: the base is the teacher)."""
        from ..engine.interactive import GranularityPredictor

        pred = GranularityPredictor(self.base, precision=self.settings.precision, cache_size=1)
        out = []
        flips = [dihedral(img, k) for img in images for k in range(min(self.settings.replay_augment,
                                                                         self.settings.augment))]
        for i, img in enumerate(flips):
            feats, inputs = self._base_features(pred, img)
            size = target_labels(np.zeros(img.shape[:2], np.int32), self.settings.loss_side).labels.shape
            out.append(_Variant(-1 - i, feats, inputs, self._click_weights(img, size),
                                torch.zeros(size, dtype=torch.int32), [], tuple(size)))
        return out

    def _click_weights(self, image: np.ndarray, size) -> torch.Tensor | None:
        """Where the keep term clicks on ``image``: "foreground" favours pixels that stand out from the image's
        typical grey value (objects, in bright-on-dark and dark-on-bright images alike), where people click and
        what the base model must keep segmenting; "uniform" clicks anywhere."""
        if self.settings.keep_clicks == "uniform":
            return None
        return torch.from_numpy(foreground_weights(image, tuple(size)))

    def _base_features(self, pred, image: np.ndarray) -> tuple[dict, torch.Tensor | None]:
        """The base model's features of ``image`` through the predictor's own path (scaling, precision), and
        the model input itself when the encoder trains (the student then encodes it on every step)."""
        with pred.lock:
            pred.set_image(image)
            feats = {"image_embed": pred._features["image_embed"],
                     "high_res_feats": list(pred._features["high_res_feats"])}
            inputs = pred._model_input(image) if self.encoder_choice != "frozen" else None
        return feats, inputs

    def _student_features(self, v: _Variant) -> dict:
        """What the trained model's decoder reads for ``v``: the cached base features while the encoder is
        frozen, else the trained encoder's features of the same input (with gradient)."""
        if v.inputs is None:
            return v.features
        from ..engine.features import image_features

        return image_features(self.model, v.inputs, self.settings.precision)

    def _trainable_copy(self, module: torch.nn.Module) -> torch.nn.Module:
        model = copy.deepcopy(module)
        for p in model.parameters():
            p.requires_grad_(False)
        inject_lora(model, lora_target_names(model))
        model.to(self.device)
        choose = is_upstream_trainable if self.settings.trainable == "lora" else (
            lambda n: is_upstream_trainable(n) or is_decoder_param(n))
        encoder = encoder_param_filter(model, self.encoder_choice)
        for name, p in model.named_parameters():
            p.requires_grad_(bool(choose(name) or encoder(name)))
        return model

    # ------------------------------------------------------------------ one step
    def _decode(self, model, feats, coords, labels, mask_input, g):
        pe, md = model.sam_prompt_encoder, model.sam_mask_decoder
        n = coords.shape[0]
        sparse, dense = pe(points=(coords, labels), boxes=None, masks=mask_input, granularity=g)
        emb = feats["image_embed"].expand(n, -1, -1, -1)
        high = [f.expand(n, -1, -1, -1) for f in feats["high_res_feats"]]
        low, iou, _, obj = md(image_embeddings=emb, image_pe=pe.get_dense_pe(), sparse_prompt_embeddings=sparse,
                              dense_prompt_embeddings=dense, multimask_output=False, repeat_image=False,
                              high_res_features=high)
        return low, iou, obj

    def _to_input(self, xy: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Pixel (x, y) at loss resolution -> model input coordinates (as the predictor transforms clicks)."""
        s = float(self.base.image_size)
        h, w = size
        return xy * torch.tensor([s / w, s / h], device=xy.device)

    def _supervised(self, v: _Variant, feats: dict) -> dict[str, torch.Tensor]:
        st = self.settings
        ids = v.objects if len(v.objects) <= st.objects_per_step else list(
            self.rng.choice(v.objects, st.objects_per_step, replace=False))
        target = torch.stack([v.labels == k for k in ids])
        xy, _ = sample_in_masks(centre_weights(target, st.centre_power), self.generator)
        coords, labels = xy[:, None, :], torch.ones(len(ids), 1, dtype=torch.int32)
        g = torch.full((len(ids),), self.granularity)
        n_corr = int(self.rng.integers(0, st.corrections + 1))
        mask_input, terms = None, []
        for it in range(1 + n_corr):
            low, iou, obj = self._decode(self.model, feats, self._to_input(coords, v.size).to(self.device),
                                         labels.to(self.device), mask_input, g.to(self.device))
            logits = F.interpolate(low.float(), size=v.size, mode="bilinear", align_corners=False)[:, 0]
            terms.append(unsamv2_loss(logits, iou, obj, target.to(logits.device), st.loss))
            if it < n_corr:
                c, lab = correction_clicks((logits.detach() > 0).cpu(), target, self.generator)
                coords, labels = torch.cat([coords, c], 1), torch.cat([labels, lab], 1)
                mask_input = low.detach().float()
        return {k: torch.stack([t[k] for t in terms]).mean() for k in ("loss", "iou")}

    def _keep(self, v: _Variant, feats: dict) -> torch.Tensor:
        """Match the base model's masks (as soft targets) for random clicks: on a training image at
        granularities away from the labels', on a replay image (``keep_images``) at any granularity."""
        st = self.settings
        n = st.objects_per_step
        gap = st.keep_gap if v.image >= 0 else 0.0
        h, w = v.size
        if v.click_weights is not None:
            xy, _ = sample_in_masks(v.click_weights[None].expand(n, -1, -1), self.generator)
        else:
            xy = torch.rand(n, 2, generator=self.generator) * torch.tensor([w - 1, h - 1])
        low_end, high_start = max(0.1, self.granularity - gap), min(1.0, self.granularity + gap)
        if gap == 0.0:
            low_end, high_start = 1.0, 1.0  # one interval: [0.1, 1]
        below, above = low_end - 0.1, 1.0 - high_start  # lengths of [0.1, g - gap] and [g + gap, 1]
        u = torch.rand(n, generator=self.generator) * max(below + above, 1e-6)
        g = torch.where(u < below, 0.1 + u, high_start + (u - below)).clamp(0.1, 1.0)
        if v.image < 0:  # replay: the labels' granularity is where training moves the model most
            at_label = torch.rand(n, generator=self.generator) < st.replay_label_g
            g = torch.where(at_label, torch.full_like(g, self.granularity), g)
        coords = self._to_input(xy[:, None, :], v.size).to(self.device)
        labels = torch.ones(n, 1, dtype=torch.int32, device=self.device)
        with torch.no_grad():
            teacher, _, _ = self._decode(self.base.module, v.features, coords, labels, None, g.to(self.device))
        student, _, _ = self._decode(self.model, feats, coords, labels, None, g.to(self.device))
        target = torch.sigmoid(teacher.float())[:, 0]
        student = student.float()[:, 0]
        return F.binary_cross_entropy_with_logits(student, target) + dice_loss(student, target).mean()

    def _anchor(self) -> torch.Tensor:
        """Squared size of the change from the base (the LoRA update B @ A counts through B, which starts at 0)."""
        total = torch.zeros((), device=self.device)
        for name, p in self.params.items():
            ref = self.start.get(name)
            total = total + ((p - ref) ** 2).sum() if ref is not None else total + (p ** 2).sum()
        return total

    def step(self, optimizer) -> dict[str, float]:
        st = self.settings
        v = self.variants[int(self.rng.integers(len(self.variants)))]
        self.model.sam_prompt_encoder.train()
        self.model.sam_mask_decoder.train()
        feats = self._student_features(v)
        with precision_context(self.device, st.precision):
            out = self._supervised(v, feats)
            loss = out["loss"]
            keep = torch.zeros((), device=self.device)
            if st.keep_weight > 0 and st.keep_on_training:
                keep = self._keep(v, feats)
            if st.keep_weight > 0:
                for _ in range(st.replay_per_step if self.replay else 0):  # images of what it knew, any g
                    r = self.replay[int(self.rng.integers(len(self.replay)))]
                    keep = keep + self._keep(r, self._student_features(r))
        anchor = self._anchor() if st.anchor_weight > 0 else torch.zeros((), device=self.device)
        total = loss + st.keep_weight * keep + st.anchor_weight * anchor
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(list(self.params.values()), 1.0)
        optimizer.step()
        return {"loss": float(total.detach()), "mask_loss": float(loss.detach()), "keep": float(keep.detach()),
                "anchor": float(anchor.detach()), "train_iou": float(out["iou"])}

    def fit(self, progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> list[dict]:
        st = self.settings
        encoder = [p for n, p in self.params.items() if n.startswith("image_encoder.")]
        heads = [p for n, p in self.params.items() if not n.startswith("image_encoder.")]
        groups = [{"params": heads, "lr": st.lr}] + ([{"params": encoder, "lr": st.encoder_lr}] if encoder else [])
        optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
        warm = max(1, st.steps // 20)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / st.steps)))))
        t0 = time.perf_counter()
        for s in range(st.steps):
            if cancel is not None and cancel():
                raise FinetuneCancelled("fine-tuning cancelled: nothing was written")
            rec = self.step(optimizer)
            schedule.step()
            rec["step"] = s + 1
            self.history.append(rec)
            if progress is not None:
                elapsed = time.perf_counter() - t0
                progress(s + 1, st.steps, rec["loss"], elapsed / (s + 1) * (st.steps - s - 1))
        self.model.eval()
        return self.history

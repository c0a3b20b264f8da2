"""UnSAMv2 on Meta's SAM 2: one click plus a granularity g in [0.1, 1] selects the part or the whole.

What is added to SAM 2 (by subclassing its modules; their own weights and forward passes are unchanged):

- :class:`FourierGranularityEmbedder`: g -> 64 sin/cos pairs at frequencies ``100 ** (k / 64)`` (no 2*pi),
  interleaved ``[sin(w0 g), cos(w0 g), sin(w1 g), ...]``, then an MLP 128-192-192-256 (ReLU, dropout 0.1).
- :class:`GranularityPromptEncoder`: appends ONE sparse token ``mlp(fourier(g)) + granularity_embedding``
  after the point tokens (pad included) and before box tokens; no positional encoding.
- :class:`GranularityMaskDecoder`: an extra output token ``gra_token`` after SAM's
  ``[obj_score, iou, mask x4]``; its transformer output goes through ``gra_output_token_mlp`` and is dotted
  with the upscaled image embedding to give the ONE mask returned. IoU: token 0 (single) or the max of tokens
  1..3 (multimask). The gra token output is the object pointer token for video memory.
- LoRA (rank 8, alpha 16) on the 28 q/k/v/out projections of the decoder's two-way transformer; merged
  exactly into the weights when a checkpoint is loaded for inference (see :mod:`.lora`).

Key layout = upstream's, so released checkpoints load unchanged (:func:`load_unsamv2_state_dict`). This
module takes state dicts only; reading files is the loader's job (:mod:`napari_granseg.loading`).
"""
from __future__ import annotations

import contextlib
import contextvars
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn

from sam2.modeling.sam.mask_decoder import MaskDecoder
from sam2.modeling.sam.prompt_encoder import PromptEncoder
from sam2.modeling.sam2_utils import MLP
from sam2.sam2_video_predictor import SAM2VideoPredictor

from ..checkpoints import check_keys, check_shapes
from .builder import build_sam2_base
from .lora import LoRALinear, inject_lora, merge_lora, merged_linear_weight

__all__ = [
    "FourierGranularityEmbedder", "GranularityPromptEncoder", "GranularityMaskDecoder", "UnSAMv2Model",
    "build_unsamv2", "lora_target_names", "load_unsamv2_state_dict", "unsamv2_state_dict",
    "UNSAMV2_OVERRIDES", "G_MIN", "G_MAX", "check_granularity", "current_granularity",
]

G_MIN, G_MAX = 0.1, 1.0
#: SAM 2 settings UnSAMv2 is trained with (spec: multimask off in SAM, tracking and obj-ptr).
UNSAMV2_OVERRIDES = (
    "++model.multimask_output_in_sam=false",
    "++model.multimask_output_for_tracking=false",
    "++model.use_multimask_token_for_obj_ptr=false",
)
#: Leftover keys some released checkpoints carry; they are known and ignored.
TOLERATED_PREFIXES = ("sam_prompt_encoder.granularity_round_embedding.",)


#: The granularity SAM 2's own code paths use when they call the prompt encoder without one. A ContextVar,
#: not a module attribute: each thread (and each asyncio task) sees its own value, so two predictions running
#: at once (the napari preview worker and a batch job, say) cannot read each other's g. It is needed at all
#: because SAM 2's video predictor (``track_step``) calls the prompt encoder with no granularity argument.
_GRANULARITY: contextvars.ContextVar[float | torch.Tensor | None] = contextvars.ContextVar(
    "unsamv2_granularity", default=None)


def current_granularity() -> float | torch.Tensor | None:
    """The granularity set by the innermost :meth:`UnSAMv2Model.granularity_context` of this thread/task.

    ``None`` outside any context (no granularity token).
    """
    return _GRANULARITY.get()


def check_granularity(values: Sequence[float] | torch.Tensor) -> None:
    """Raise a ValueError naming the bad value when a granularity is outside [0.1, 1]."""
    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if t.numel() == 0:
        raise ValueError("granularity is empty: give a float in [0.1, 1] or a list of them.")
    bad = t[(t < G_MIN - 1e-6) | (t > G_MAX + 1e-6) | ~torch.isfinite(t)]
    if bad.numel():
        raise ValueError(f"granularity {bad.tolist()} is outside [0.1, 1]: 0.1 = finest parts, 1.0 = whole "
                         f"objects. Pick a value in that range.")


class _GranularityMLP(nn.Module):
    """Holds the MLP as ``.mlp`` (a Sequential) so keys read ``fourier_embedder.mlp.mlp.{0,3,6}``."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class FourierGranularityEmbedder(nn.Module):
    """g (B,) -> (B, out_dim). The Fourier features have no parameters; the MLP learns the embedding."""

    def __init__(self, out_dim: int = 256, fourier_dim: int = 128, temperature: float = 100.0,
                 hidden_dim: int = 192, dropout: float = 0.1):
        super().__init__()
        num_freqs = fourier_dim // 2
        freqs = temperature ** (torch.arange(num_freqs, dtype=torch.float32) / num_freqs)
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = _GranularityMLP(fourier_dim, hidden_dim, out_dim, dropout)

    def fourier(self, g: torch.Tensor) -> torch.Tensor:
        """Interleaved ``[sin(w0 g), cos(w0 g), sin(w1 g), cos(w1 g), ...]``."""
        x = g.reshape(-1, 1).float() * self.freqs.reshape(1, -1)
        return torch.stack([x.sin(), x.cos()], dim=-1).flatten(1)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.fourier(g))


class GranularityPromptEncoder(PromptEncoder):
    """SAM 2's prompt encoder plus one granularity token.

    ``granularity`` may be passed to ``forward``; when it is not, :func:`current_granularity` is used (the
    value of the enclosing :meth:`UnSAMv2Model.granularity_context` in this thread; SAM 2's own code paths,
    e.g. the video predictor, call ``forward`` without it). ``None`` means no granularity token, as upstream.
    """

    @classmethod
    def extend(cls, base: PromptEncoder, fourier_dim: int = 128, temperature: float = 100.0,
               hidden_dim: int = 192) -> "GranularityPromptEncoder":
        base.__class__ = cls
        base.fourier_embedder = FourierGranularityEmbedder(base.embed_dim, fourier_dim, temperature, hidden_dim)
        base.granularity_embedding = nn.Embedding(1, base.embed_dim)
        return base

    def embed_granularity(self, granularity: float | torch.Tensor, batch_size: int) -> torch.Tensor:
        """(B, 1, C) tokens for one g per batch element (a scalar is broadcast)."""
        device = self._get_device()
        g = torch.as_tensor(granularity, dtype=torch.float32, device=device).reshape(-1)
        if g.numel() == 1:
            g = g.expand(batch_size)
        if g.numel() != batch_size:
            raise ValueError(f"{g.numel()} granularity values for a batch of {batch_size} prompts")
        emb = self.fourier_embedder(g) + self.granularity_embedding.weight
        return emb.unsqueeze(1)

    def forward(self, points, boxes, masks, granularity=None):
        g = current_granularity() if granularity is None else granularity
        bs = self._get_batch_size(points, boxes, masks)
        if g is not None:
            g_numel = torch.as_tensor(g).numel()
            if g_numel > 1 and bs == 1:
                bs = g_numel
        sparse = torch.empty((bs, 0, self.embed_dim), device=self._get_device())
        if points is not None:
            coords, labels = points
            pts = self._embed_points(coords, labels, pad=(boxes is None))
            if pts.shape[0] != bs:  # one prompt shared by several g values
                pts = pts.expand(bs, -1, -1)
            sparse = torch.cat([sparse, pts], dim=1)
        if g is not None:
            sparse = torch.cat([sparse, self.embed_granularity(g, bs).to(sparse.dtype)], dim=1)
        if boxes is not None:
            box = self._embed_boxes(boxes)
            sparse = torch.cat([sparse, box.expand(bs, -1, -1) if box.shape[0] != bs else box], dim=1)
        if masks is not None:
            dense = self._embed_masks(masks)
            if dense.shape[0] != bs:
                dense = dense.expand(bs, -1, -1, -1)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
                bs, -1, self.image_embedding_size[0], self.image_embedding_size[1])
        return sparse, dense


class GranularityMaskDecoder(MaskDecoder):
    """SAM 2's mask decoder with the granularity-aware output token; returns one mask per prompt."""

    @classmethod
    def extend(cls, base: MaskDecoder) -> "GranularityMaskDecoder":
        base.__class__ = cls
        dim = base.transformer_dim
        base.gra_token = nn.Embedding(1, dim)
        base.gra_output_token_mlp = MLP(dim, dim, dim // 8, 3)
        return base

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                multimask_output, repeat_image, high_res_features=None):
        masks, iou_pred, gra_token_out, object_score_logits = self.predict_masks(
            image_embeddings=image_embeddings, image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=dense_prompt_embeddings,
            repeat_image=repeat_image, high_res_features=high_res_features)
        if multimask_output:
            iou = iou_pred[:, 1:].max(dim=1, keepdim=True).values
        else:
            iou = iou_pred[:, 0:1]
        return masks, iou, gra_token_out, object_score_logits

    def predict_masks(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                      repeat_image, high_res_features=None):
        """As SAM 2's, with the gra token appended; only the gra mask is produced.

        SAM's four mask tokens still take part in attention (so the transformer sees what it was trained
        with), but their hypernetwork masks are not computed: upstream discards them.
        """
        s = 0
        tokens = [self.iou_token.weight, self.mask_tokens.weight, self.gra_token.weight]
        if self.pred_obj_scores:
            tokens.insert(0, self.obj_score_token.weight)
            s = 1
        output_tokens = torch.cat(tokens, dim=0).unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1)
        tokens = torch.cat((output_tokens.to(sparse_prompt_embeddings.dtype), sparse_prompt_embeddings), dim=1)
        if repeat_image:
            src = torch.repeat_interleave(image_embeddings, tokens.shape[0], dim=0)
        else:
            src = image_embeddings
        src = src + dense_prompt_embeddings
        pos_src = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, s, :]
        gra_index = s + 1 + self.num_mask_tokens
        gra_token_out = hs[:, gra_index: gra_index + 1, :]
        src = src.transpose(1, 2).reshape(b, c, h, w)
        if not self.use_high_res_features:
            upscaled = self.output_upscaling(src)
        else:
            dc1, ln1, act1, dc2, act2 = self.output_upscaling
            feat_s0, feat_s1 = high_res_features
            if feat_s0.shape[0] != b:
                feat_s0 = feat_s0.expand(b, -1, -1, -1)
                feat_s1 = feat_s1.expand(b, -1, -1, -1)
            upscaled = act1(ln1(dc1(src) + feat_s1))
            upscaled = act2(dc2(upscaled) + feat_s0)
        hyper = self.gra_output_token_mlp(gra_token_out[:, 0, :]).unsqueeze(1)  # (B, 1, C/8)
        bu, cu, hu, wu = upscaled.shape
        masks = (hyper @ upscaled.reshape(bu, cu, hu * wu)).reshape(bu, 1, hu, wu)
        iou_pred = self.iou_prediction_head(iou_token_out)
        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0, :])
        else:
            object_score_logits = 10.0 * iou_pred.new_ones(iou_pred.shape[0], 1)
        return masks, iou_pred, gra_token_out, object_score_logits


class UnSAMv2Model(SAM2VideoPredictor):
    """A SAM 2 model (image and video paths) with UnSAMv2's granularity modules.

    Being a ``SAM2VideoPredictor`` subclass, the same weights serve ``SAM2ImagePredictor``-style image
    prediction and z/t propagation; :meth:`granularity_context` sets g for SAM 2 code paths that do not
    pass it explicitly (scoped to the calling thread, see :func:`current_granularity`).
    """

    def __init__(self, *args, fourier_dim: int = 128, temperature: float = 100.0,
                 granularity_hidden_dim: int = 192, **kwargs):
        super().__init__(*args, **kwargs)
        GranularityPromptEncoder.extend(self.sam_prompt_encoder, fourier_dim, temperature, granularity_hidden_dim)
        GranularityMaskDecoder.extend(self.sam_mask_decoder)

    @contextlib.contextmanager
    def granularity_context(self, granularity: float | torch.Tensor | None) -> Iterator[None]:
        """Use ``granularity`` for every prompt-encoder call inside the block (video propagation).

        The value lives in a ``contextvars.ContextVar``: it holds for the calling thread only, nests, and is
        restored on exit even when the block raises.
        """
        if granularity is not None:
            check_granularity(granularity)
        token = _GRANULARITY.set(granularity)
        try:
            yield
        finally:
            _GRANULARITY.reset(token)


def lora_target_names(model: nn.Module) -> list[str]:
    """The 28 projections LoRA adapts, as dotted names relative to ``model`` (a SAM2Base)."""
    names = []
    transformer = model.sam_mask_decoder.transformer
    blocks = [f"layers.{i}.{attn}" for i in range(len(transformer.layers))
              for attn in ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token")]
    blocks.append("final_attn_token_to_image")
    for blk in blocks:
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            names.append(f"sam_mask_decoder.transformer.{blk}.{proj}")
    return names


def build_unsamv2(config: str | Path = "configs/sam2.1/sam2.1_hiera_s.yaml", overrides: Sequence[str] = (),
                  device: str | torch.device = "cpu", lora: bool = False, lora_rank: int = 8,
                  lora_alpha: float = 16.0) -> UnSAMv2Model:
    """An UnSAMv2 model with random weights (LoRA modules injected when ``lora``, e.g. for training)."""
    model = build_sam2_base(config, list(UNSAMV2_OVERRIDES) + list(overrides), target=UnSAMv2Model, device="cpu")
    if lora:
        inject_lora(model, lora_target_names(model), rank=lora_rank, alpha=lora_alpha)
    return model.to(device).eval()


def _lora_groups(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        for suffix in (".original_layer.weight", ".original_layer.bias", ".lora_A", ".lora_B"):
            if key.endswith(suffix):
                groups.setdefault(key[: -len(suffix)], {})[suffix] = value
    return groups


def convert_upstream_state_dict(state: Mapping[str, torch.Tensor], merge: bool = True,
                                lora_alpha: float = 16.0) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map an upstream UnSAMv2 state dict onto a merged-LoRA model.

    ``X.original_layer.{weight,bias}`` -> ``X.{weight,bias}`` with ``lora_B @ lora_A * alpha / r`` added to the
    weight (rank r read from the tensors). Returns the new dict and the tolerated leftover keys dropped.
    """
    out: dict[str, torch.Tensor] = {}
    dropped = [k for k in state if k.startswith(TOLERATED_PREFIXES)]
    groups = _lora_groups(state) if merge else {}
    consumed = set()
    for prefix, parts in groups.items():
        if ".original_layer.weight" not in parts:
            continue
        weight = parts[".original_layer.weight"]
        if ".lora_A" in parts and ".lora_B" in parts:
            a, b = parts[".lora_A"], parts[".lora_B"]
            weight = merged_linear_weight(weight, a, b, lora_alpha / a.shape[0])
        out[f"{prefix}.weight"] = weight
        if ".original_layer.bias" in parts:
            out[f"{prefix}.bias"] = parts[".original_layer.bias"]
        consumed.update(f"{prefix}{s}" for s in parts)
    for key, value in state.items():
        if key in consumed or key in dropped:
            continue
        out[key] = value
    return out, dropped


def load_unsamv2_state_dict(model: UnSAMv2Model, state: Mapping[str, torch.Tensor], source: str = "<state dict>",
                            lora_alpha: float = 16.0) -> list[str]:
    """Load upstream-layout weights into ``model`` strictly (every key accounted for).

    If ``model`` carries LoRA modules (training), the LoRA keys load as they are; otherwise they are merged.
    Returns the tolerated leftover keys that were ignored.
    """
    has_lora = any(isinstance(m, LoRALinear) for m in model.modules())
    if has_lora:
        dropped = [k for k in state if k.startswith(TOLERATED_PREFIXES)]
        converted = {k: v for k, v in state.items() if k not in dropped}
        # a LoRA model can also start from a plain (merged / SAM 2) checkpoint: route W, b to original_layer
        lora_names = {n for n, m in model.named_modules() if isinstance(m, LoRALinear)}
        for name in lora_names:
            for p in ("weight", "bias"):
                if f"{name}.{p}" in converted:
                    converted[f"{name}.original_layer.{p}"] = converted.pop(f"{name}.{p}")
        check_shapes(model.state_dict(), converted, source, "unsamv2")
        missing, unexpected = model.load_state_dict(converted, strict=False)
        # LoRA factors absent from a plain checkpoint keep their initialisation (B = 0: no change)
        missing = [k for k in missing if not k.endswith((".lora_A", ".lora_B"))]
    else:
        converted, dropped = convert_upstream_state_dict(state, merge=True, lora_alpha=lora_alpha)
        check_shapes(model.state_dict(), converted, source, "unsamv2")
        missing, unexpected = model.load_state_dict(converted, strict=False)
    check_keys(missing, unexpected, source, "unsamv2",
               hint="An UnSAMv2 checkpoint holds SAM 2 weights plus granularity modules "
                    "(sam_prompt_encoder.fourier_embedder.*, sam_mask_decoder.gra_token.*). A plain SAM 2 "
                    "checkpoint lacks them: load it with kind='sam2'. Check also that config matches "
                    "(UnSAMv2 uses configs/sam2.1/sam2.1_hiera_s.yaml).")
    return dropped


def unsamv2_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict in upstream layout (LoRA kept unmerged if present)."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def count_new_parameters(model: UnSAMv2Model) -> dict[str, int]:
    """Trainable-parameter counts of the UnSAMv2 additions (spec: 111,488 / 140,064 / 94,208 for SAM 2.1-S)."""
    pe, md = model.sam_prompt_encoder, model.sam_mask_decoder
    lora = sum(p.numel() for m in model.modules() if isinstance(m, LoRALinear) for p in (m.lora_A, m.lora_B))
    return {
        "granularity_encoder": sum(p.numel() for p in pe.fourier_embedder.parameters())
        + pe.granularity_embedding.weight.numel(),
        "granularity_token": md.gra_token.weight.numel() + sum(p.numel() for p in md.gra_output_token_mlp.parameters()),
        "lora": lora,
    }


def merge_model_lora(model: nn.Module) -> int:
    """Fold all LoRA updates into their weights (exact), for inference after training."""
    return merge_lora(model)


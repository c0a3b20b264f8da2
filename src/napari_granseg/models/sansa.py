"""SANSA: SAM 2 with AdaptFormer adapters in the last two Hiera stages, for few-shot segmentation.

Why this shape: SANSA (Cuttano et al.) keeps SAM 2.0 Hiera-L frozen and adds a small bottleneck adapter
parallel to the MLP of every block in the last two Hiera stages; the adapted features make SAM 2's video
memory match *semantic* classes instead of one tracked object. A few-shot episode is then a pseudo-video:
reference frames with masks, followed by the target frame.

Layout (must match the released checkpoints):

- ``SansaModel.sam`` is the SAM 2 model (``SAM2Base``), so adapter keys read
  ``sam.image_encoder.trunk.blocks.{i}.adapter.{adapter_layer_norm_before,down_proj,up_proj}.{weight,bias}``.
- Adapter: ``0.1 * up(relu(down(LayerNorm(x))))``; width = block ``dim_out``; bottleneck
  ``int(block.dim * channel_factor)`` (0.3 for the strict few-shot checkpoints, 0.8 for Universal/generalist).
- Block: ``x = x + drop_path(mlp(norm2(x))) + adapter(x)``; the adapter reads the residual stream after
  attention. We extend Meta's ``MultiScaleBlock`` by swapping each adapted block's class to
  :class:`AdaptedMultiScaleBlock`; sam2's files are not copied.

This module takes state dicts only; reading checkpoint files is the loader's job
(:func:`napari_granseg.loading.load_sansa`).
"""
from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

import torch
import torch.nn as nn
from sam2.modeling.backbones.hieradet import MultiScaleBlock, do_pool
from sam2.modeling.backbones.utils import window_partition, window_unpartition

from ..checkpoints import CheckpointError, check_keys

__all__ = [
    "SAM20_OVERRIDES", "SANSA_CHANNEL_FACTORS", "Adapter", "AdaptedMultiScaleBlock", "SansaModel",
    "build_sansa_model", "sansa_adapter_state_dict", "load_sansa_adapters", "load_sansa_base_state",
    "sansa_adapter_state",
    "infer_bottlenecks", "adapted_block_indices", "is_adapter_key",
]

#: SANSA runs SAM 2.0 without object-score prediction (upstream's hydra overrides).
SAM20_OVERRIDES = ("++model.pred_obj_scores=false", "++model.pred_obj_scores_mlp=false",
                   "++model.fixed_no_obj_ptr=false")
#: Channel factors of the released checkpoints (strict few-shot, Universal/generalist).
SANSA_CHANNEL_FACTORS = (0.3, 0.8)
#: Base-checkpoint keys that exist only with ``pred_obj_scores=True``: dropped when loading SAM 2.0 weights.
_OBJ_SCORE_PATTERNS = ("pred_obj_score_head", "obj_score_token", "no_obj_ptr")
_ADAPTER_RE = re.compile(r"^(?:sam\.)?image_encoder\.trunk\.blocks\.(\d+)\.adapter\.")


def is_adapter_key(key: str) -> bool:
    """True for adapter parameter names (with or without the ``sam.`` prefix)."""
    return _ADAPTER_RE.match(key) is not None


class Adapter(nn.Module):
    """AdaptFormer bottleneck: ``scale * up(relu(down(LayerNorm(x))))``; starts as a zero residual."""

    def __init__(self, width: int, bottleneck: int, scale: float = 0.1):
        super().__init__()
        self.scale = scale
        self.adapter_layer_norm_before = nn.LayerNorm(width, eps=1e-5)
        self.down_proj = nn.Linear(width, bottleneck)
        self.up_proj = nn.Linear(bottleneck, width)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream init: down kaiming-uniform(a=sqrt 5) with zero bias; up all zeros (identity block)."""
        nn.init.kaiming_uniform_(self.down_proj.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down_proj.bias)
        nn.init.zeros_(self.up_proj.weight)
        nn.init.zeros_(self.up_proj.bias)
        self.adapter_layer_norm_before.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.adapter_layer_norm_before(x)
        return self.up_proj(torch.relu(self.down_proj(x))) * self.scale


class AdaptedMultiScaleBlock(MultiScaleBlock):
    """Meta's Hiera block plus a parallel adapter: ``x = x + drop_path(mlp(norm2(x))) + adapter(x)``.

    Instances are made by :func:`attach_adapter` (class swap on an existing block), so the block keeps its
    weights and key names; the forward repeats ``MultiScaleBlock.forward`` step by step (same operations in
    the same order, so a zero adapter gives bit-identical features) and adds the adapter term.
    """

    adapter: Adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x  # B, H, W, C
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = do_pool(self.proj(x), self.pool)
        window_size = self.window_size
        if window_size > 0:
            H, W = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, window_size)
        x = self.attn(x)
        if self.q_stride:
            window_size = self.window_size // self.q_stride[0]
            H, W = shortcut.shape[1:3]
            pad_h = (window_size - H % window_size) % window_size
            pad_w = (window_size - W % window_size) % window_size
            pad_hw = (H + pad_h, W + pad_w)
        if self.window_size > 0:
            x = window_unpartition(x, window_size, pad_hw, (H, W))
        x = shortcut + self.drop_path(x)
        x = x + self.drop_path(self.mlp(self.norm2(x))) + self.adapter(x)
        return x


def attach_adapter(block: MultiScaleBlock, bottleneck: int) -> AdaptedMultiScaleBlock:
    """Turn ``block`` into an :class:`AdaptedMultiScaleBlock` in place (weights and names kept)."""
    if not isinstance(block, MultiScaleBlock):
        raise TypeError(f"expected a sam2 Hiera MultiScaleBlock, got {type(block).__name__}")
    param = next(block.parameters())
    block.__class__ = AdaptedMultiScaleBlock
    block.adapter = Adapter(block.dim_out, bottleneck).to(device=param.device, dtype=param.dtype)
    return block  # type: ignore[return-value]


def adapted_block_indices(trunk: nn.Module, n_stages: int = 2) -> list[int]:
    """Indices of the blocks in the last ``n_stages`` Hiera stages (Hiera-L: 8..47; granseg_tiny: 2..4)."""
    ends = list(trunk.stage_ends)
    first = ends[-n_stages - 1] + 1 if len(ends) > n_stages else 0
    return list(range(first, ends[-1] + 1))


def infer_bottlenecks(state: Mapping[str, torch.Tensor]) -> dict[int, int]:
    """Block index -> bottleneck width, read from the ``down_proj.weight`` shapes of an adapter state dict."""
    out = {}
    for key, value in state.items():
        m = _ADAPTER_RE.match(key)
        if m and key.endswith("down_proj.weight"):
            out[int(m.group(1))] = int(value.shape[0])
    return out


class SansaModel(nn.Module):
    """SAM 2 (attribute ``sam``) with adapters in the last two Hiera stages.

    ``channel_factor``: bottleneck = ``int(block.dim * channel_factor)``; or ``bottlenecks`` {block: width}
    for checkpoints whose shapes fit no single factor. ``image_size``: the model's square input size.
    """

    def __init__(self, sam: nn.Module, channel_factor: float | None = 0.8,
                 bottlenecks: Mapping[int, int] | None = None, freeze_base: bool = True):
        super().__init__()
        self.sam = sam
        # SANSA's target frame: no prompt -> multimask output, best predicted IoU kept; prompted references:
        # single mask (upstream sets multimask_max_pt_num = 0).
        self.sam.multimask_max_pt_num = 0
        trunk = sam.image_encoder.trunk
        self.adapted_blocks = adapted_block_indices(trunk)
        if bottlenecks is None:
            if channel_factor is None:
                raise ValueError("give channel_factor or bottlenecks")
            bottlenecks = {i: int(trunk.blocks[i].dim * channel_factor) for i in self.adapted_blocks}
        else:
            bad = sorted(set(bottlenecks) - set(self.adapted_blocks))
            if bad:
                raise CheckpointError(
                    f"adapters for Hiera blocks {bad} do not fit this model (adapted blocks "
                    f"{self.adapted_blocks[0]}..{self.adapted_blocks[-1]}): is the config right for this checkpoint?")
            bottlenecks = {i: int(bottlenecks.get(i, int(trunk.blocks[i].dim * (channel_factor or 0.8))))
                           for i in self.adapted_blocks}
        self.channel_factor = channel_factor
        self.bottlenecks = dict(bottlenecks)
        for i in self.adapted_blocks:
            attach_adapter(trunk.blocks[i], self.bottlenecks[i])
        self.load_info: dict = {}
        if freeze_base:
            self.set_trainable("adapters")

    @property
    def image_size(self) -> int:
        return int(self.sam.image_size)

    def adapters(self) -> dict[int, Adapter]:
        """Block index -> its adapter."""
        return {i: self.sam.image_encoder.trunk.blocks[i].adapter for i in self.adapted_blocks}

    def set_trainable(self, which: str = "adapters") -> int:
        """``"adapters"`` (SANSA: everything else frozen) or ``"all"`` (from-scratch tiny models).

        Returns the number of trainable parameters.
        """
        if which not in ("adapters", "all"):
            raise ValueError(f"trainable must be 'adapters' or 'all', not {which!r}")
        for name, p in self.named_parameters():
            p.requires_grad_(which == "all" or is_adapter_key(name[len("sam."):]))
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def adapter_parameter_count(self) -> int:
        return sum(p.numel() for a in self.adapters().values() for p in a.parameters())

    def forward(self, img_batch: torch.Tensor) -> dict:
        """The adapted image encoder (``sam.forward_image``); episodes run through the engine/trainer."""
        return self.sam.forward_image(img_batch)


def sansa_adapter_state_dict(model: SansaModel) -> dict[str, torch.Tensor]:
    """Adapter weights only, under upstream key names (``sam.image_encoder.trunk.blocks.{i}.adapter...``)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if is_adapter_key(k)}


def load_sansa_base_state(model_sam: nn.Module, state: Mapping[str, torch.Tensor],
                          source: str = "<base state dict>") -> dict:
    """Load SAM 2 base weights into ``model_sam`` (before adapters are attached).

    Accepts Meta's SAM 2 state dict or a full SANSA state dict (keys ``sam.*``, as our trainer saves
    from-scratch tiny models). Object-score weights (absent with SAM 2.0 overrides) and adapter keys are set
    aside and reported; any other mismatch raises :class:`CheckpointError`.
    """
    if any(k.startswith("sam.") for k in state):
        state = {k[len("sam."):]: v for k, v in state.items() if k.startswith("sam.")}
    adapters = sorted(k for k in state if is_adapter_key(k))
    state = {k: v for k, v in state.items() if not is_adapter_key(k)}
    own = model_sam.state_dict()
    leftovers = sorted(k for k in state if k not in own and any(p in k for p in _OBJ_SCORE_PATTERNS))
    state = {k: v for k, v in state.items() if k not in leftovers}
    shape_bad = sorted(k for k in state if k in own and own[k].shape != state[k].shape)
    if shape_bad:
        raise CheckpointError(
            f"SAM 2 base checkpoint {source} has tensors of other shapes than config's model, e.g. "
            f"{[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in shape_bad[:5]]}. SANSA's base is SAM 2.0 "
            f"Hiera-L (sam2_hiera_large.pt) with config 'configs/sam2/sam2_hiera_l.yaml'.")
    missing, unexpected = model_sam.load_state_dict(state, strict=False)
    check_keys(missing, unexpected, source, "sansa (SAM 2 base)",
               hint="SANSA needs the SAM 2.0 Hiera-L checkpoint sam2_hiera_large.pt with config "
                    "'configs/sam2/sam2_hiera_l.yaml' (the model zoo name is 'sam2-hiera-large').")
    return {"base_checkpoint": str(source), "base_leftover_keys": leftovers, "base_adapter_keys_ignored": adapters}


def sansa_adapter_state(state: Mapping[str, torch.Tensor], source: str = "<adapter state dict>"
                        ) -> dict[str, torch.Tensor]:
    """``state`` with every key under ``sam.``; :class:`CheckpointError` when it holds no adapters at all
    (saying what the file looks like instead: UnSAMv2, plain SAM 2)."""
    if not any(is_adapter_key(k) for k in state):
        hint = ""
        if any("gra_token" in k or "fourier_embedder" in k for k in state):
            hint = " It looks like an UnSAMv2 checkpoint: load it with kind='unsamv2'."
        elif any(k.startswith(("image_encoder.", "sam_mask_decoder.")) for k in state):
            hint = (" It looks like a plain SAM 2 checkpoint: pass it as base_checkpoint= and give the SANSA "
                    "adapter file (e.g. sansa_universal.pth, adapter_fss_fold0.pth) as the model path.")
        raise CheckpointError(
            f"{source} holds no SANSA adapter weights (keys like 'sam.image_encoder.trunk.blocks.8.adapter."
            f"down_proj.weight'; found e.g. {sorted(state)[:3]}).{hint}")
    return {("sam." + k if not k.startswith("sam.") else k): v for k, v in state.items()}


def load_sansa_adapters(model: SansaModel, state: Mapping[str, torch.Tensor],
                        source: str = "<adapter state dict>") -> dict:
    """Load adapter weights (upstream layout) into ``model``; every key must be accounted for.

    A state that also holds non-adapter ``sam.*`` weights (a from-scratch tiny model saved whole by the
    trainer) loads them too. Missing adapters, unknown keys or wrong shapes raise :class:`CheckpointError`.
    """
    state = sansa_adapter_state(state, source)
    own = model.state_dict()
    unexpected = sorted(k for k in state if k not in own)
    ours = {k for k in own if is_adapter_key(k)}
    missing = sorted(ours - set(state))
    check_keys(missing, unexpected, source, "sansa",
               hint="Adapters must match the config (Hiera-L: blocks 8..47) and the channel factor; "
                    "channel_factor=None infers it from the file.")
    bad = sorted(k for k in state if own[k].shape != state[k].shape)
    if bad:
        raise CheckpointError(
            f"SANSA checkpoint {source} does not fit the model: shape mismatch for {len(bad)} tensors, e.g. "
            f"{[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in bad[:3]]}. Pass channel_factor=None "
            f"to infer the adapter size from the file, and check the config.")
    model.load_state_dict(state, strict=False)
    full = len(state) > len(ours)
    return {"adapter_checkpoint": str(source), "adapter_keys": len(ours), "full_model_in_file": full}


def _factor_from(bottlenecks: Mapping[int, int], trunk: nn.Module) -> float | None:
    if any(not 0 <= i < len(trunk.blocks) for i in bottlenecks):
        return None
    for cf in SANSA_CHANNEL_FACTORS:
        if all(int(trunk.blocks[i].dim * cf) == b for i, b in bottlenecks.items()):
            return cf
    return None


def build_sansa_model(config: str = "configs/sam2/sam2_hiera_l.yaml",
                      base_state: Mapping[str, torch.Tensor] | None = None,
                      adapter_state: Mapping[str, torch.Tensor] | None = None, channel_factor: float | None = None,
                      device: str | torch.device = "cpu", overrides: Sequence[str] = (),
                      base_source: str = "<base state dict>", adapter_source: str = "<adapter state dict>"
                      ) -> SansaModel:
    """Build SANSA: SAM 2.0 (object scores off) from ``config``, base weights, then adapters.

    - ``base_state`` None: random base weights (tests); else Meta's SAM 2.0 state dict (object-score keys
      dropped, listed in ``model.load_info``), or a full SANSA state dict saved by our trainer.
    - ``channel_factor`` None: inferred from ``adapter_state``'s shapes (0.3 or 0.8; other shapes give
      per-block bottlenecks), 0.8 without adapter weights.
    - ``base_source`` / ``adapter_source``: where the states came from, for messages and ``load_info``.
    Files are read by :func:`napari_granseg.loading.load_sansa`.
    """
    from .builder import build_sam2_base

    sam = build_sam2_base(config, overrides=[*SAM20_OVERRIDES, *overrides], device="cpu")
    info: dict = {}
    if base_state is not None:
        info.update(load_sansa_base_state(sam, base_state, base_source))
    bottlenecks = None
    if adapter_state is not None:
        adapter_state = sansa_adapter_state(adapter_state, adapter_source)
        if channel_factor is None:
            found = infer_bottlenecks(adapter_state)
            channel_factor = _factor_from(found, sam.image_encoder.trunk)
            if channel_factor is None:
                bottlenecks = found
    if channel_factor is None and bottlenecks is None:
        channel_factor = 0.8
    model = SansaModel(sam, channel_factor=channel_factor, bottlenecks=bottlenecks)
    if adapter_state is not None:
        info.update(load_sansa_adapters(model, adapter_state, adapter_source))
        info["channel_factor"] = channel_factor
    model.load_info = info
    return model.to(device).eval()

"""The one image-encoder call of every engine, under the precision policy of ``napari_granseg.devices``.

Why: "auto" runs the bulk of SAM 2's image encoder in bfloat16 but a few parts of it in float32
(``devices.ENCODER_EXACT_PARTS``: the parts that decide where a mask's border falls). SAM 2's
``forward_image`` calls the trunk, the neck and the decoder's high-res convolutions itself, so those parts
are switched to float32 by forward hooks that live only for one call and act only in the calling thread,
never by copying SAM 2's forward code. The predictor, the tiled predictor (through the predictor),
propagation's frame cache and the few-shot engine all encode through :func:`forward_image`.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import torch
from torch import nn

from ..devices import ENCODER_EXACT_PARTS, autocast_dtype, precision_context

__all__ = ["forward_image", "exact_part_modules"]


def _first_stage_blocks(trunk: nn.Module) -> list[nn.Module]:
    return list(trunk.blocks[: trunk.stage_ends[0] + 1])


def _residual_projections(trunk: nn.Module) -> list[nn.Module]:
    """Each block's attention output projection and, at a stage change, the block's channel projection."""
    found = []
    for block in trunk.blocks:
        found.append(block.attn.proj)
        if block.dim != block.dim_out:  # Hiera's MultiScaleBlock has ``proj`` exactly then
            found.append(block.proj)
    return found


def exact_part_modules(sam: nn.Module, parts: tuple[str, ...] = ENCODER_EXACT_PARTS) -> list[nn.Module]:
    """The modules of SAM 2 model ``sam`` that make up the named encoder ``parts``."""
    encoder, trunk = sam.image_encoder, sam.image_encoder.trunk
    found: list[nn.Module] = []
    for part in parts:
        if part == "patch_embed":
            found.append(trunk.patch_embed)
        elif part == "first_stage":
            found += _first_stage_blocks(trunk)
        elif part == "residual_projections":
            found += _residual_projections(trunk)
        elif part == "fpn_neck":
            found.append(encoder.neck)
        elif part == "high_res_convs":
            if sam.use_high_res_features_in_sam:
                found += [sam.sam_mask_decoder.conv_s0, sam.sam_mask_decoder.conv_s1]
        else:
            raise ValueError(f"unknown encoder part {part!r}; known: {ENCODER_EXACT_PARTS}")
    return found


def _as_float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_as_float32(v) for v in value)
    if isinstance(value, dict):
        return {k: _as_float32(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def _exact_parts(modules: list[nn.Module], device: torch.device, precision: str) -> Iterator[None]:
    """Run ``modules`` in the "encoder_exact" stage's context (inputs cast to float32) for one call."""
    owner = threading.get_ident()
    open_contexts: list[contextlib.AbstractContextManager] = []

    def enter(_module, args, kwargs):
        if threading.get_ident() != owner:  # another thread's call of the same model: not ours to change
            return None
        ctx = precision_context(device, precision, "encoder_exact")
        ctx.__enter__()
        open_contexts.append(ctx)
        return _as_float32(args), _as_float32(kwargs)

    def leave(_module, _args, _output):
        if threading.get_ident() == owner and open_contexts:
            open_contexts.pop().__exit__(None, None, None)

    handles = []
    try:
        for module in modules:
            handles.append(module.register_forward_pre_hook(enter, with_kwargs=True))
            handles.append(module.register_forward_hook(leave, always_call=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def forward_image(sam: nn.Module, images: torch.Tensor, precision: str,
                  exact_parts: tuple[str, ...] = ENCODER_EXACT_PARTS) -> dict:
    """SAM 2's ``forward_image(images)`` with the encoder stages of ``precision`` (``devices.STAGES``).

    ``exact_parts``: the parts run in the "encoder_exact" stage; the policy's own unless a benchmark
    compares other splits.
    """
    device = images.device
    split = autocast_dtype(device, precision, "encoder") != autocast_dtype(device, precision, "encoder_exact")
    modules = exact_part_modules(sam, exact_parts)
    exact = _exact_parts(modules, device, precision) if split and modules else contextlib.nullcontext()
    with precision_context(device, precision, "encoder"), exact:
        return sam.forward_image(images)

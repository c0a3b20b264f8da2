"""The SANSA episode on SAM 2's memory, shared by the few-shot engine and the SANSA trainer.

A SANSA episode is a pseudo-video: reference frames 0..k-1 (each with a mask, points, box or scribble) then
the target frame k. Frame roles follow the official code exactly:

- reference 0: ``track_step(0, is_init_cond_frame=True, mask_inputs=...)`` -> ``cond_frame_outputs``;
- references i >= 1: ``track_step(i, True, ...)`` -> ``non_cond_frame_outputs`` (ordinary past memories);
- target: ``track_step(k, False, ...)`` with no prompt and ``run_mem_encoder=False``; multimask output with
  the best predicted IoU kept (``multimask_max_pt_num = 0``, set by ``SansaModel``).

Why memory banks: SAM 2 attends to ``num_maskmem`` (7) mask memories, the conditioning frame and the 6
frames just before the target, so with more than 7 references the masks of references 1..k-7 are never read
(only their object pointers, and only up to 15 frames back). :func:`memory_banks` splits the references into
banks of at most 7 frames that all share reference 0 as their conditioning frame; the target runs against
every bank and the banks' logits are averaged (:func:`segment_with_banks`). With up to 7 references there is
one bank, the official episode itself, so results are unchanged there.

Reference outputs do not depend on their frame index or on each other (a conditioning-frame step reads no
memory; time enters only when the target reads the memory), so each reference is encoded once and the banks
only re-number the stored outputs.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..models.encoder_precision import forward_image

__all__ = ["Features", "encode_frames", "build_memory", "reference_memory", "target_step", "memory_banks", "segment_with_banks"]

Features = tuple  # (vision_feats: list[(HW, B, C)], vision_pos_embeds: list, feat_sizes: list[(h, w)])


def encode_frames(sam: torch.nn.Module, images: torch.Tensor, precision: str | None = None) -> list[Features]:
    """Run the (adapted) image encoder once over ``images`` (N, 3, S, S); one feature tuple per image.

    ``precision``: the engines' setting (``models.encoder_precision.forward_image``); None (training) runs
    ``sam.forward_image`` in whatever autocast the caller opened.
    """
    backbone_out = sam.forward_image(images) if precision is None else forward_image(sam, images, precision)
    _, feats, pos, sizes = sam._prepare_backbone_features(backbone_out)
    return [([f[:, i:i + 1] for f in feats], [p[:, i:i + 1] for p in pos], sizes) for i in range(images.shape[0])]


def build_memory(sam: torch.nn.Module, ref_features: Sequence[Features], ref_prompts: Sequence[dict],
                 num_frames: int) -> tuple[dict, list[dict]]:
    """Encode references 0..k-1 into SAM 2's memory (``output_dict``) with upstream's frame roles.

    ``ref_prompts[i]``: ``{"mask_inputs": (B,1,S,S) or None, "point_inputs": {point_coords, point_labels}
    or None}``. Returns ``(output_dict, per-reference outputs)``. Each reference's memory is encoded as
    upstream does it (:func:`reference_memory`), not as ``track_step`` would.
    """
    output_dict: dict[str, dict[int, Any]] = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    outs = []
    for i, (feats, prompt) in enumerate(zip(ref_features, ref_prompts)):
        vision_feats, vision_pos, sizes = feats
        out, sam_outputs, _, _ = sam._track_step(
            i, True, vision_feats, vision_pos, sizes, prompt.get("point_inputs"), prompt.get("mask_inputs"),
            output_dict, num_frames, False, None)
        low_res, obj_ptr, object_score_logits = sam_outputs[3], sam_outputs[5], sam_outputs[6]
        memory, memory_pos = reference_memory(sam, vision_feats, sizes, low_res, object_score_logits)
        out.update(pred_masks=low_res, obj_ptr=obj_ptr, object_score_logits=object_score_logits,
                   maskmem_features=memory, maskmem_pos_enc=memory_pos)
        output_dict["cond_frame_outputs" if i == 0 else "non_cond_frame_outputs"][i] = out
        outs.append(out)
    return output_dict, outs


def reference_memory(sam: torch.nn.Module, vision_feats: list, feat_sizes: list, low_res_logits: torch.Tensor,
                     object_score_logits: torch.Tensor) -> tuple[torch.Tensor, list]:
    """A reference's memory (features, positional encodings) the way the official SANSA code encodes it.

    Why not ``track_step``'s own memory: upstream feeds the memory encoder the reference's low-res logits
    brought back to the model size (bilinear), for mask prompts too, where ``track_step`` would feed the +-10
    mask at full size (sharper edges: target logits move by ~1e-4). And the logits always go through the
    sigmoid (upstream never binarises point-prompted masks).
    """
    size = (int(sam.image_size), int(sam.image_size))
    high = F.interpolate(low_res_logits.float(), size=size, mode="bilinear", align_corners=False)
    return sam._encode_new_memory(current_vision_feats=vision_feats, feat_sizes=feat_sizes, pred_masks_high_res=high,
                                  object_score_logits=object_score_logits, is_mask_from_pts=False)


def target_step(sam: torch.nn.Module, features: Features, output_dict: dict, frame_idx: int,
                num_frames: int) -> dict:
    """The target frame: reads the memory, no prompt, writes nothing (``run_mem_encoder=False``)."""
    vision_feats, vision_pos, sizes = features
    return sam.track_step(
        frame_idx=frame_idx, is_init_cond_frame=False, current_vision_feats=vision_feats,
        current_vision_pos_embeds=vision_pos, feat_sizes=sizes, point_inputs=None, mask_inputs=None,
        output_dict=output_dict, num_frames=num_frames, run_mem_encoder=False)


def memory_banks(sam: torch.nn.Module, output_dict: dict, split: bool = True) -> list[tuple[dict, int]]:
    """Split a memory of k references into banks SAM 2 reads completely: ``[(bank output_dict, k_bank)]``.

    Up to ``num_maskmem`` references, or ``split=False`` (the official episode, where the target reads the
    masks of reference 0 and of the 6 references just before it): ``[(output_dict, k)]`` unchanged. More:
    references 1..k-1 in their order, in ``ceil((k - 1) / (num_maskmem - 1))`` consecutive groups of
    near-equal size; each bank holds reference 0 as frame 0 (conditioning) and its group as frames
    1..k_bank-1.
    """
    cond = output_dict["cond_frame_outputs"]
    others = [output_dict["non_cond_frame_outputs"][i] for i in sorted(output_dict["non_cond_frame_outputs"])]
    capacity = int(sam.num_maskmem) - 1
    if not split or capacity < 1 or len(others) <= capacity:
        return [(output_dict, len(cond) + len(others))]
    banks = []
    for group in np.array_split(np.arange(len(others)), math.ceil(len(others) / capacity)):
        bank = {"cond_frame_outputs": {0: cond[0]},
                "non_cond_frame_outputs": {j + 1: others[i] for j, i in enumerate(group)}}
        banks.append((bank, len(group) + 1))
    return banks


def segment_with_banks(sam: torch.nn.Module, features: Features, banks: Sequence[tuple[dict, int]]) -> torch.Tensor:
    """The target's low-res logits (B, 1, h, w): one target step per bank, logits averaged over the banks
    (a single bank's logits are returned as they are)."""
    logits = [target_step(sam, features, bank, frame_idx=k, num_frames=k + 1)["pred_masks"] for bank, k in banks]
    if len(logits) == 1:
        return logits[0]
    return torch.stack([x.float() for x in logits]).mean(0)

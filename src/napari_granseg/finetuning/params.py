"""Which UnSAMv2 parameters a training run changes, by name (shared by fine-tuning and ``granseg_training``).

UnSAMv2's own recipe ('upstream') trains only its new modules (the granularity encoder, the granularity output
token) and the LoRA factors in the mask decoder's transformer; everything of SAM 2 stays as it was.
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["GRANULARITY_PARAM_KEYS", "is_upstream_trainable", "is_decoder_param", "encoder_param_filter", "resolve_encoder_choice",
           "SMALL_ENCODER_PARAMS", "resolve_step_work", "FULL_STEP", "LIGHT_STEP"]

#: Parameter-name fragments of UnSAMv2's new modules (trained in 'upstream' mode together with LoRA).
GRANULARITY_PARAM_KEYS = ("sam_prompt_encoder.fourier_embedder.", "sam_prompt_encoder.granularity_embedding.",
                          "sam_mask_decoder.gra_token.", "sam_mask_decoder.gra_output_token_mlp.")


def is_upstream_trainable(name: str) -> bool:
    """Whether parameter ``name`` trains in 'upstream' mode (granularity modules and LoRA factors)."""
    return name.startswith(GRANULARITY_PARAM_KEYS) or name.endswith((".lora_A", ".lora_B"))


def is_decoder_param(name: str) -> bool:
    """Whether ``name`` belongs to the prompt encoder or mask decoder (the 'decoder' fine-tuning choice), apart
    from the frozen weights LoRA wraps (those change through their LoRA factors only)."""
    return name.startswith(("sam_prompt_encoder.", "sam_mask_decoder.")) and ".original_layer." not in name


def encoder_param_filter(model: torch.nn.Module, choice: str) -> Callable[[str], bool]:
    """Which image-encoder parameters train for ``choice``: "frozen" none, "all" every one, "last_stage" the
    blocks of the trunk's last stage and the FPN neck (the features the decoder reads are closest to them, and
    the earlier stages, most of the encoder's compute at high resolution, stay as they were)."""
    if choice == "frozen":
        return lambda name: False
    if choice == "all":
        return lambda name: name.startswith("image_encoder.")
    if choice != "last_stage":
        raise ValueError(f"encoder={choice!r}: use 'frozen', 'last_stage' or 'all'")
    ends = list(model.image_encoder.trunk.stage_ends)
    first = ends[-2] + 1 if len(ends) > 1 else 0
    blocks = tuple(f"image_encoder.trunk.blocks.{i}." for i in range(first, ends[-1] + 1))
    return lambda name: name.startswith(blocks + ("image_encoder.neck.",))


#: Encoders with fewer parameters than this (the bundled demo's) train whole at little cost on any device.
SMALL_ENCODER_PARAMS = 5_000_000


def _released_size(model: torch.nn.Module) -> bool:
    """Whether ``model``'s image encoder is as large as the released models': the cheaper "auto" choices off a GPU."""
    return sum(p.numel() for p in model.image_encoder.parameters()) >= SMALL_ENCODER_PARAMS


def resolve_encoder_choice(choice: str, model: torch.nn.Module, device: torch.device) -> str:
    """What "auto" means for this model and device; other choices are returned as they are.

    Training the encoder costs its forward and backward pass on every step instead of one forward per image
    (docs/benchmarks.md, per-step costs). "auto": a small encoder trains whole; a released-size encoder trains
    its last stage on a GPU, and stays frozen on a CPU or MPS, where that pass would turn minutes into hours.
    """
    if choice != "auto":
        return choice
    if not _released_size(model):
        return "all"
    return "last_stage" if torch.device(device).type == "cuda" else "frozen"


#: (objects per step, most corrective clicks) of a training step: the full one, and the light one "auto" picks
#: where a step is expensive. On the demo's decoder the light step, at the same steps, scored 0.76 against 0.78
#: on the development domain (encoder frozen); on a released-size decoder on a CPU it costs 1.5 s instead of 4.8 s
#: (docs/benchmarks.md), so 800 steps take 20 minutes instead of an hour.
FULL_STEP, LIGHT_STEP = (8, 1), (4, 0)


def resolve_step_work(objects_per_step: int | None, corrections: int | None, model: torch.nn.Module,
                      device: torch.device) -> tuple[int, int]:
    """``(objects_per_step, corrections)`` with ``None`` ("auto") resolved for this model and device: the light
    step for a released-size model off a CUDA GPU (its decoder works on a 64 x 64 embedding: 4.8 s a full step
    on one CPU thread), the full step elsewhere. Values given are returned as they are."""
    light = _released_size(model) and torch.device(device).type != "cuda"
    auto = LIGHT_STEP if light else FULL_STEP
    return (auto[0] if objects_per_step is None else int(objects_per_step),
            auto[1] if corrections is None else int(corrections))

"""Which UnSAMv2 parameters a training run changes, by name (shared by fine-tuning and ``granseg_training``).

UnSAMv2's own recipe ('upstream') trains only its new modules (the granularity encoder, the granularity output
token) and the LoRA factors in the mask decoder's transformer; everything of SAM 2 stays as it was.
"""
from __future__ import annotations

__all__ = ["GRANULARITY_PARAM_KEYS", "is_upstream_trainable", "is_decoder_param"]

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

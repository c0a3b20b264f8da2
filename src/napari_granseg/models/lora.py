"""LoRA for ``nn.Linear`` in the upstream UnSAMv2 layout, and its exact merge for inference.

Layout (kept so released checkpoints load unchanged): the wrapped layer lives at ``original_layer`` and the
low-rank factors are the parameters ``lora_A`` [r, in] and ``lora_B`` [out, r]:
``y = W x + b + dropout(x) A^T B^T * (alpha / r)``.
For inference the factors are folded into ``W`` once (``W + scale * B @ A``), so prediction costs nothing extra.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

__all__ = ["LoRALinear", "inject_lora", "merge_lora", "merged_linear_weight"]


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update (rank ``rank``, scale ``alpha / rank``)."""

    def __init__(self, original_layer: nn.Linear, rank: int = 8, alpha: float = 16.0, dropout: float = 0.1):
        super().__init__()
        self.original_layer = original_layer
        self.rank = rank
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.randn(rank, original_layer.in_features) * 0.01)
        self.lora_B = nn.Parameter(torch.zeros(original_layer.out_features, rank))
        self.dropout = nn.Dropout(dropout)

    @property
    def weight(self) -> torch.Tensor:  # lets code that inspects .weight (dtype/device) keep working
        return self.original_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.original_layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = (self.dropout(x) @ self.lora_A.t().to(x.dtype)) @ self.lora_B.t().to(x.dtype)
        return self.original_layer(x) + update * self.scale

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing the same function in eval mode."""
        layer = nn.Linear(self.original_layer.in_features, self.original_layer.out_features,
                          bias=self.original_layer.bias is not None)
        layer = layer.to(self.original_layer.weight.device, self.original_layer.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(merged_linear_weight(self.original_layer.weight, self.lora_A, self.lora_B, self.scale))
            if self.original_layer.bias is not None:
                layer.bias.copy_(self.original_layer.bias)
        return layer


def merged_linear_weight(weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor,
                         scale: float) -> torch.Tensor:
    """``W + scale * B @ A`` computed in float64 then cast back, so the merge is exact to float32 rounding."""
    merged = weight.double() + scale * (lora_b.double() @ lora_a.double())
    return merged.to(weight.dtype)


def _get_parent(root: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    parts = dotted.split(".")
    parent = root
    for p in parts[:-1]:
        parent = getattr(parent, p)
    return parent, parts[-1]


def inject_lora(root: nn.Module, names: Iterable[str], rank: int = 8, alpha: float = 16.0,
                dropout: float = 0.1) -> list[str]:
    """Wrap each ``nn.Linear`` at the dotted ``names`` (relative to ``root``) in :class:`LoRALinear`."""
    done = []
    for name in names:
        parent, attr = _get_parent(root, name)
        layer = getattr(parent, attr)
        if isinstance(layer, LoRALinear):
            continue
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"{name} is {type(layer).__name__}, not nn.Linear: cannot add LoRA")
        setattr(parent, attr, LoRALinear(layer, rank=rank, alpha=alpha, dropout=dropout))
        done.append(name)
    return done


def merge_lora(root: nn.Module) -> int:
    """Replace every :class:`LoRALinear` under ``root`` by its merged ``nn.Linear``; returns how many."""
    targets = [name for name, m in root.named_modules() if isinstance(m, LoRALinear)]
    for name in targets:
        parent, attr = _get_parent(root, name)
        setattr(parent, attr, getattr(parent, attr).merged())
    return len(targets)

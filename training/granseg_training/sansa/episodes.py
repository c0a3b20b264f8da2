"""Training-side episode helpers: batched encoding for episodic training, and upstream's per-target episode.

The plugin's engine builds the reference memory once and reuses it for every target; upstream instead runs
one fresh episode per target (all k references and the target re-encoded). That per-target path is kept here,
outside the plugin, because only the tests (reuse == fresh episode) and the benchmarks need it.
"""
from __future__ import annotations

import numpy as np
import torch

from napari_granseg.engine.episode import (Features, build_memory, encode_frames, memory_banks,
                                           segment_with_banks)
from napari_granseg.engine.fewshot import FewShotResult, FewShotSegmenter

__all__ = ["encode_batch", "split_batch", "segment_episode_reference"]


def encode_batch(sam: torch.nn.Module, images: torch.Tensor) -> Features:
    """Encoder over (N, 3, S, S) keeping the batch together (N on dim 1 of the flattened features)."""
    _, feats, pos, sizes = sam._prepare_backbone_features(sam.forward_image(images))
    return feats, pos, sizes


def split_batch(features: Features, batch: int) -> list[Features]:
    """Split features of T*B images (frame-major) into T per-frame tuples with batch B."""
    feats, pos, sizes = features
    n = feats[0].shape[1] // batch
    return [([f[:, t * batch:(t + 1) * batch] for f in feats], [p[:, t * batch:(t + 1) * batch] for p in pos], sizes)
            for t in range(n)]


@torch.inference_mode()
def segment_episode_reference(segmenter: FewShotSegmenter, target: np.ndarray,
                              batch_backbone: bool = False) -> FewShotResult:
    """Upstream's per-target episode: the segmenter's k references + this target re-encoded, fresh memory.

    ``batch_backbone``: one encoder pass over all k + 1 frames, as upstream does (equal to the per-frame path
    up to float rounding of batched kernels); False encodes frame by frame, which matches
    ``segmenter.segment`` bit for bit. Slow by design.
    """
    segmenter.require_references()
    segmenter.model.eval()
    refs = segmenter.references
    tensor, shape = segmenter.prepare(target)
    images = [r.image for r in refs] + [tensor]
    with segmenter.precision_context():
        if batch_backbone:
            feats = encode_frames(segmenter.sam, torch.cat(images))
        else:
            feats = [encode_frames(segmenter.sam, im)[0] for im in images]
        k = len(refs)
        memory, _ = build_memory(segmenter.sam, feats[:k], [r.prompt for r in refs], k + 1)
        logits = segment_with_banks(segmenter.sam, feats[k], memory_banks(segmenter.sam, memory))
    return segmenter.readout(logits, shape)

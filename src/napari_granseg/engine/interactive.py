"""Points + granularity -> masks, mirroring ``sam2``'s ``SAM2ImagePredictor`` (napari-free).

:class:`GranularityPredictor` subclasses Meta's predictor and adds: images as microscopists have them
(16-bit, gray, any size; see :mod:`.normalize`), an embedding cache (:mod:`.embeddings`), a ``granularity``
argument where a list of g values is decoded in ONE batched decoder pass, UnSAMv2's optional mask-refinement
pass, and errors that say what to do.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sam2.sam2_image_predictor import SAM2ImagePredictor

from ..devices import autocast_for
from ..models.loaded import LoadedModel
from ..models.unsamv2 import GranularityPromptEncoder, check_granularity
from .embeddings import EmbeddingCache, image_key
from .normalize import DEFAULT_PERCENTILES, check_image, downsample_for_model, intensity_range

__all__ = ["GranularityPredictor", "PromptError"]


class PromptError(ValueError):
    """Bad clicks (outside the image, labels not 0/1, mismatched lengths), with the fix in the message."""


def _as_points(point_coords, point_labels, hw: tuple[int, int]) -> tuple[np.ndarray | None, np.ndarray | None]:
    if point_coords is None:
        if point_labels is not None:
            raise PromptError("point_labels given without point_coords")
        return None, None
    coords = np.asarray(point_coords, dtype=np.float32).reshape(-1, 2)
    labels = np.ones(len(coords), np.int32) if point_labels is None else np.asarray(point_labels).reshape(-1)
    if len(labels) != len(coords):
        raise PromptError(f"{len(coords)} points but {len(labels)} labels: give one label (1 = object, "
                          f"0 = background) per point")
    if not np.isin(labels, (0, 1, 2, 3)).all():
        raise PromptError(f"point labels must be 1 (positive) or 0 (negative), got {sorted(set(labels.tolist()))}")
    h, w = hw
    outside = (coords[:, 0] < 0) | (coords[:, 0] > w - 1) | (coords[:, 1] < 0) | (coords[:, 1] > h - 1)
    if outside.any():
        raise PromptError(f"points {coords[outside].tolist()} lie outside the image of width {w} and height {h}; "
                          f"coordinates are (x, y) = (column, row) in pixels")
    return coords, labels.astype(np.int32)


class GranularityPredictor(SAM2ImagePredictor):
    """Interactive UnSAMv2 (or stock SAM 2) prediction on one image at a time.

    Parameters
    ----------
    model: a :class:`~napari_granseg.models.loaded.LoadedModel` (``gs.load_model``) or a SAM2Base module.
    mask_threshold: logit threshold for binary masks (0 as upstream's notebook; evaluation uses -1).
    cache_size: how many images' embeddings to keep in memory (a 1024 px model: ~16 MB each).
    disk_cache_dir: optional folder for a persistent embedding cache.
    autocast: None = automatic bf16 policy of :func:`napari_granseg.devices.autocast_for`.
    percentiles: intensity clipping for non-8-bit images (None = min-max).
    """

    def __init__(self, model: LoadedModel | torch.nn.Module, mask_threshold: float = 0.0, cache_size: int = 8,
                 disk_cache_dir=None, autocast: bool | None = None,
                 percentiles: tuple[float, float] | None = DEFAULT_PERCENTILES, **kwargs):
        self.loaded = model if isinstance(model, LoadedModel) else None
        module = model.module if isinstance(model, LoadedModel) else model
        super().__init__(module, mask_threshold=mask_threshold, **kwargs)
        s = int(module.image_size)
        self._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
        self.cache = EmbeddingCache(cache_size, disk_cache_dir)
        self.autocast = autocast
        self.percentiles = percentiles
        self.current_key: str | None = None
        #: decode several g values in one batch (None: on GPUs yes, on CPU no, where a loop is faster)
        self.batch_granularities: bool | None = None
        name = self.loaded.name if self.loaded else type(module).__name__
        self._model_tag = f"{name}:{id(module)}"

    @property
    def has_granularity(self) -> bool:
        """True for UnSAMv2 models (the prompt encoder takes a granularity token)."""
        return isinstance(self.model.sam_prompt_encoder, GranularityPromptEncoder)

    # ---------------------------------------------------------------- image
    @torch.no_grad()
    def _model_input(self, image: np.ndarray) -> torch.Tensor:
        """(1, 3, S, S) normalised model input, computed on the model's device.

        Same result as :func:`to_model_rgb` followed by sam2's resize + ImageNet normalisation, but the
        float conversion, resize and normalisation run on the GPU when there is one (3x faster set_image
        on CUDA than doing them on the CPU as sam2's predictor does).
        """
        s = int(self.model.image_size)
        small = downsample_for_model(image, s)
        lo, hi = intensity_range(image, self.percentiles)
        hi = hi if hi > lo else lo + 1.0
        data = small.astype(np.float32, copy=False)
        if np.issubdtype(small.dtype, np.floating):
            data = np.nan_to_num(data)
        x = torch.from_numpy(np.ascontiguousarray(data)).to(self.device)
        x = x[None].expand(3, -1, -1) if x.ndim == 2 else x[..., :3].permute(2, 0, 1)
        x = ((x - lo) / (hi - lo)).clamp_(0.0, 1.0)
        x = F.interpolate(x[None], size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self._transforms.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self._transforms.std, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def _compute_features(self, x: torch.Tensor) -> dict:
        with autocast_for(self.device, self.autocast):
            backbone_out = self.model.forward_image(x)
            _, vision_feats, _, _ = self.model._prepare_backbone_features(backbone_out)
        if self.model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + self.model.no_mem_embed
        feats = [feat.float().permute(1, 2, 0).reshape(1, -1, *size)
                 for feat, size in zip(vision_feats[::-1], self._bb_feat_sizes[::-1])][::-1]
        return {"image_embed": feats[-1], "high_res_feats": feats[:-1]}

    def set_image(self, image: np.ndarray) -> None:  # type: ignore[override]
        """Embed ``image`` (HxW or HxWx3, uint8/uint16/float), reusing a cached embedding when there is one."""
        image = check_image(image)
        key = image_key(image, self._model_tag, str(self.percentiles))
        self.reset_predictor()

        def compute():
            return self._compute_features(self._model_input(image))

        feats = self.cache.get_or_compute(key, compute)
        self._features = {"image_embed": feats["image_embed"].to(self.device),
                          "high_res_feats": [f.to(self.device) for f in feats["high_res_feats"]]}
        self._orig_hw = [tuple(image.shape[:2])]
        self._is_image_set = True
        self._is_batch = False
        self.current_key = key

    def is_cached(self, image: np.ndarray) -> bool:
        """Whether ``set_image(image)`` would skip the encoder."""
        return image_key(check_image(image), self._model_tag, str(self.percentiles)) in self.cache

    # ---------------------------------------------------------------- prompts
    @torch.no_grad()
    def predict(self, point_coords=None, point_labels=None, granularity: float | Sequence[float] | None = None,
                multimask_output: bool = False, mask_input=None, return_logits: bool = False, box=None,
                refine: bool = False, normalize_coords: bool = True):
        """Masks for clicks at one or several granularities.

        point_coords: [[x, y], ...] pixels (x = column); point_labels: 1 positive, 0 negative.
        granularity: a float in [0.1, 1] -> one mask; a sequence -> one mask per value, all decoded in one
        batched pass. None -> no granularity token (stock SAM 2 models must use None).
        mask_input: previous low-res logits (1, h, w) or (N, h, w) fed back (click simulation, refinement).
        refine: UnSAMv2's second pass with its own logits as mask input (same g, single mask).
        Returns masks (N, H, W) bool (float logits if ``return_logits``), ious (N,), low_res_logits (N, h, w);
        a stock SAM 2 model with ``multimask_output=True`` gives its 3 masks (N = 3), as sam2's predictor.
        """
        if not self._is_image_set:
            raise RuntimeError("no image set: call set_image(image) before predict(...)")
        hw = self._orig_hw[0]
        coords, labels = _as_points(point_coords, point_labels, hw)
        if coords is None and box is None and mask_input is None:
            raise PromptError("give at least one point (point_coords=[[x, y]]) or a box")
        g_values = None
        if granularity is not None:
            if not self.has_granularity:
                raise ValueError("this model has no granularity input (a stock SAM 2 model): load an UnSAMv2 "
                                 "model (gs.load_model('unsamv2-plus')) or pass granularity=None")
            g_values = np.atleast_1d(np.asarray(granularity, dtype=np.float32))
            check_granularity(g_values)
        n = 1 if g_values is None else len(g_values)

        mask_t = None
        if mask_input is not None:
            mask_t = torch.as_tensor(np.asarray(mask_input), dtype=torch.float32, device=self.device)
            mask_t = mask_t.reshape(-1, 1, *mask_t.shape[-2:])
            if mask_t.shape[0] == 1 and n > 1:
                mask_t = mask_t.expand(n, -1, -1, -1)
        _, unnorm_coords, label_t, unnorm_box = self._prep_prompts(
            coords, labels, None if box is None else np.asarray(box, np.float32), None, normalize_coords)
        # GPUs decode all g values in one batch; on CPU a batch of N is slower than N single passes (the
        # per-prompt image-token work is memory-bound there: measured 580 vs 365 ms for 10 g, Hiera-S).
        batched = self.batch_granularities if self.batch_granularities is not None else self.device.type != "cpu"
        chunk = n if batched else 1
        lows, iou_list = [], []
        for start in range(0, n, chunk):
            sl = slice(start, start + chunk)
            g_chunk = None if g_values is None else g_values[sl]
            m_chunk = None if mask_t is None else mask_t[sl]
            low_c, iou_c = self._decode(unnorm_coords, label_t, unnorm_box, m_chunk, g_chunk, multimask_output,
                                        min(chunk, n - start))
            if refine:
                low_c, iou_c = self._decode(unnorm_coords, label_t, unnorm_box, low_c, g_chunk, False,
                                            min(chunk, n - start))
            lows.append(low_c)
            iou_list.append(iou_c)
        low, ious = torch.cat(lows), torch.cat(iou_list)
        masks = self._transforms.postprocess_masks(low, hw)
        low = torch.clamp(low, -32.0, 32.0)
        if not return_logits:
            masks = masks > self.mask_threshold
        # (N, C, ...) -> (N*C, ...): C = 1 for UnSAMv2, 3 for stock SAM 2 with multimask_output
        return (masks.flatten(0, 1).cpu().numpy(), ious.flatten(0, 1).float().cpu().numpy(),
                low.flatten(0, 1).float().cpu().numpy())

    def _decode(self, coords, labels, boxes, mask_t, g_values, multimask_output, n):
        """One decoder pass for ``n`` prompts sharing the clicks (batched over g); returns (N,1,h,w), (N,1)."""
        points = None
        if coords is not None:
            points = (coords, labels)
        if boxes is not None:
            box_coords = boxes.reshape(-1, 2, 2)
            box_labels = torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device).repeat(box_coords.shape[0], 1)
            points = ((torch.cat([box_coords, points[0]], 1), torch.cat([box_labels, points[1]], 1))
                      if points is not None else (box_coords, box_labels))
        pe = self.model.sam_prompt_encoder
        if self.has_granularity:
            g = None if g_values is None else torch.as_tensor(g_values, device=self.device)
            sparse, dense = pe(points=points, boxes=None, masks=mask_t, granularity=g)
            if g is None and self.model.sam_prompt_encoder.granularity is None and sparse.shape[0] != n:
                sparse, dense = sparse.expand(n, -1, -1), dense.expand(n, -1, -1, -1)
        else:
            sparse, dense = pe(points=points, boxes=None, masks=mask_t)
        high_res = [f[-1:] for f in self._features["high_res_feats"]]
        low, ious, _, _ = self.model.sam_mask_decoder(
            image_embeddings=self._features["image_embed"][-1:], image_pe=pe.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            multimask_output=multimask_output, repeat_image=sparse.shape[0] > 1, high_res_features=high_res)
        return low, ious

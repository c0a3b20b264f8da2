"""Points + granularity -> masks, mirroring ``sam2``'s ``SAM2ImagePredictor`` (napari-free).

:class:`GranularityPredictor` subclasses Meta's predictor and adds: images as microscopists have them
(16-bit, gray, any size; see :mod:`.normalize`), an embedding cache (:mod:`.embeddings`), a ``granularity``
argument where a list of g values is decoded in ONE batched decoder pass, UnSAMv2's optional mask-refinement
pass, one ``precision`` for every model call (``devices.precision_context``), a lock so threads can share
one predictor, and prompt checks (:mod:`.prompts`) whose errors say what to do.
"""
from __future__ import annotations

import threading
from typing import Sequence

import numpy as np
import torch
from sam2.sam2_image_predictor import SAM2ImagePredictor

from ..devices import ENCODER_EXACT_PARTS, check_precision, encoder_policy, precision_context
from ..models.loaded import LoadedModel
from ..models.unsamv2 import GranularityPromptEncoder
from .features import feature_sizes, image_features
from .embeddings import DEFAULT_MAX_BYTES, EmbeddingCache, image_key, model_fingerprint
from .normalize import DEFAULT_PERCENTILES, check_image, check_intensity, intensity_range, model_input
from .prompts import PromptError, as_box, as_granularities, as_points, remote_hint

__all__ = ["GranularityPredictor", "PromptError"]


def _current_granularity(prompt_encoder):
    """The granularity a prompt encoder uses when none is passed (the scoped ``granularity_context``)."""
    try:
        from ..models.unsamv2 import current_granularity
    except ImportError:  # older models module: the value lives on the prompt encoder
        return getattr(prompt_encoder, "granularity", None)
    return current_granularity()


class GranularityPredictor(SAM2ImagePredictor):
    """Interactive UnSAMv2 (or stock SAM 2) prediction on one image at a time.

    Parameters
    ----------
    model: a :class:`~napari_granseg.models.loaded.LoadedModel` (``gs.load_model``) or a SAM2Base module.
    precision: "auto" | "fp32" | "bf16" (:data:`napari_granseg.devices.PRECISIONS`): every model call (image
        encoder and decoder) runs in ``devices.precision_context``; "fp32" computes what the official float32
        code computes, whatever autocast the caller has open.
    mask_threshold: logit threshold for binary masks (0 as upstream's notebook; evaluation uses -1).
    cache_size: how many images' embeddings to keep in memory (a 1024 px model: ~16 MB each).
    disk_cache_dir: optional folder for a persistent embedding cache (reused by later sessions).
    cache_max_bytes: disk budget of that folder (least recently used entries go first).
    percentiles: intensity clipping for non-8-bit single images (None = min-max); stacks pass their own
        range to :meth:`set_image` instead.
    max_hole_area, max_sprinkle_area: sam2's mask post-processing (0 = off, as sam2's default).

    It implements :class:`~napari_granseg.engine.protocols.Predictor`. To run it on a GPU machine, open it
    through ``napari_granseg.compute.open_predictor(model, where=ADDRESS)`` (docs/remote.md): same calls, same
    masks.

    ``lock`` (an RLock) is held by :meth:`set_image` and :meth:`predict`; hold it yourself around a
    ``set_image`` + ``predict`` pair when several threads (console, widget worker, batch) share the predictor.
    """

    #: the image-encoder parts "auto" runs in float32 (``devices.ENCODER_EXACT_PARTS``); only a benchmark
    #: comparing other splits sets another tuple (in a subclass), and the embedding key follows it
    encoder_exact_parts: tuple[str, ...] = ENCODER_EXACT_PARTS

    def __init__(self, model: LoadedModel | torch.nn.Module, precision: str = "auto", mask_threshold: float = 0.0,
                 cache_size: int = 8, disk_cache_dir=None, cache_max_bytes: int = DEFAULT_MAX_BYTES,
                 percentiles: tuple[float, float] | None = DEFAULT_PERCENTILES,
                 max_hole_area: float = 0.0, max_sprinkle_area: float = 0.0, scheduler=None):
        if scheduler is not None:
            raise TypeError(remote_hint("GranularityPredictor", "open_predictor", scheduler))
        self.loaded = model if isinstance(model, LoadedModel) else None
        module = model.module if isinstance(model, LoadedModel) else model
        if not hasattr(module, "forward_image"):
            raise TypeError(f"model must be a LoadedModel from gs.load_model (UnSAMv2 or SAM 2), got "
                            f"{type(module).__name__}")
        self.precision = check_precision(precision)
        super().__init__(module, mask_threshold=mask_threshold, max_hole_area=max_hole_area,
                         max_sprinkle_area=max_sprinkle_area)
        s = int(module.image_size)
        self._bb_feat_sizes = feature_sizes(s)
        self.cache = EmbeddingCache(cache_size, disk_cache_dir, max_bytes=cache_max_bytes)
        self.percentiles = percentiles
        self.lock = threading.RLock()
        self.current_key: str | None = None
        #: the (low, high) grey values the current image was scaled with
        self.current_intensity: tuple[float, float] | None = None
        #: decode several g values in one batch (None: on GPUs yes, on CPU no, where a loop is faster)
        self.batch_granularities: bool | None = None
        self._config_name = self.loaded.config if self.loaded else type(module).__name__
        model_fingerprint(module)  # hashed now (not at the first click); again only if the weights change

    @property
    def _model_tag(self) -> str:
        """The model part of every embedding key: follows the weights, even when they are trained in place."""
        return f"{self._config_name}:{model_fingerprint(self.model)}"

    @property
    def image_size(self) -> int:
        """The model's square input in pixels (1024 for the released models, 256 for the demo)."""
        return int(self.model.image_size)

    @property
    def has_granularity(self) -> bool:
        """True for UnSAMv2 models (the prompt encoder takes a granularity token)."""
        return isinstance(self.model.sam_prompt_encoder, GranularityPromptEncoder)

    # ---------------------------------------------------------------- image
    def _intensity_for(self, image: np.ndarray, intensity: tuple[float, float] | None) -> tuple[float, float]:
        """The grey range ``image`` is scaled with: ``intensity`` (a stack's range) or the image's own."""
        if intensity is not None:
            return intensity
        if image.dtype == np.uint8:
            return 0.0, 255.0
        return intensity_range(image, self.percentiles)

    def _embedding_key(self, image: np.ndarray, intensity: tuple[float, float]) -> str:
        policy = encoder_policy(self.device, self.precision, self.encoder_exact_parts)
        extra = f"{self.device.type}|{policy}|{intensity[0]!r},{intensity[1]!r}|{int(self.model.image_size)}"
        return image_key(image, self._model_tag, extra)

    @torch.no_grad()
    def _model_input(self, image: np.ndarray, intensity: tuple[float, float] | None = None) -> torch.Tensor:
        """(1, 3, S, S) model input on the model's device (:func:`~.normalize.model_input`, the one path)."""
        return model_input(image, int(self.model.image_size), self.device,
                           intensity=self._intensity_for(image, intensity))

    @torch.no_grad()
    def _compute_features(self, x: torch.Tensor) -> dict:
        return image_features(self.model, x, self.precision, self.encoder_exact_parts)

    def set_image(self, image: np.ndarray, intensity: tuple[float, float] | None = None) -> None:  # type: ignore[override]
        """Embed ``image`` (HxW or HxWx3, uint8/uint16/float), reusing a cached embedding when there is one.

        ``intensity``: the (low, high) grey values to scale with. Give the STACK's range for a slice of a
        stack (``engine.normalize.intensity_range(stack)``), so a slice is the same input in the preview, in
        propagation and in the CLI; None: the image's own range (uint8: 0..255, else its percentiles).
        """
        image = check_image(image)
        intensity = self._intensity_for(image, check_intensity(intensity))
        with self.lock:
            key = self._embedding_key(image, intensity)
            self.reset_predictor()
            feats = self.cache.get_or_compute(
                key, lambda: self._compute_features(self._model_input(image, intensity)))
            self._features = {"image_embed": feats["image_embed"].to(self.device),
                              "high_res_feats": [f.to(self.device) for f in feats["high_res_feats"]]}
            self._orig_hw = [tuple(image.shape[:2])]
            self._is_image_set = True
            self._is_batch = False
            self.current_key = key
            self.current_intensity = intensity

    def is_cached(self, image: np.ndarray, intensity: tuple[float, float] | None = None) -> bool:
        """Whether ``set_image(image, intensity)`` would skip the encoder."""
        image = check_image(image)
        return self._embedding_key(image, self._intensity_for(image, check_intensity(intensity))) in self.cache

    # ---------------------------------------------------------------- prompts
    @torch.no_grad()
    def predict(self, point_coords=None, point_labels=None, granularity: float | Sequence[float] | None = None,
                multimask_output: bool = False, mask_input=None, return_logits: bool = False, box=None,
                refine: bool = False, normalize_coords: bool = True):
        """Masks for clicks at one or several granularities.

        point_coords: [[x, y], ...] pixels (x = column), finite, inside the image; point_labels: 1 object,
        0 background (box corners are given as ``box``, never as labels 2/3).
        granularity: a float in [0.1, 1] -> one mask; a sequence -> one mask per value, all decoded in one
        batched pass. None -> no granularity token (stock SAM 2 models must use None).
        box: [x0, y0, x1, y1] pixels. At least one of points, box or mask_input is needed.
        mask_input: previous low-res logits (1, h, w) or (N, h, w) fed back (click simulation, refinement).
        refine: UnSAMv2's second pass with its own logits as mask input (same g, single mask).
        Returns masks (N, H, W) bool (float logits if ``return_logits``), ious (N,), low_res_logits (N, h, w);
        a stock SAM 2 model with ``multimask_output=True`` gives its 3 masks (N = 3), as sam2's predictor.
        """
        with self.lock:
            if not self._is_image_set:
                raise RuntimeError("no image set: call set_image(image) before predict(...)")
            hw = self._orig_hw[0]
            coords, labels = as_points(point_coords, point_labels, hw)
            box_arr = as_box(box, hw)
            if coords is None and box_arr is None and mask_input is None:
                raise PromptError("the prompt is empty: give at least one point (point_coords=[[x, y]], "
                                  "point_labels=[1]), a box=[x0, y0, x1, y1] or a mask_input")
            g_values = None
            if granularity is not None:
                if not self.has_granularity:
                    raise ValueError("this model has no granularity input (a stock SAM 2 model): load an UnSAMv2 "
                                     "model (gs.load_model('unsamv2-plus')) or pass granularity=None")
                g_values = as_granularities(granularity)
            n = 1 if g_values is None else len(g_values)

            mask_t = None
            if mask_input is not None:
                mask_t = torch.as_tensor(np.asarray(mask_input), dtype=torch.float32, device=self.device)
                mask_t = mask_t.reshape(-1, 1, *mask_t.shape[-2:])
                if mask_t.shape[0] == 1 and n > 1:
                    mask_t = mask_t.expand(n, -1, -1, -1)
            _, unnorm_coords, label_t, unnorm_box = self._prep_prompts(coords, labels, box_arr, None,
                                                                       normalize_coords)
            # GPUs decode all g values in one batch; on CPU a batch of N is slower than N single passes (the
            # per-prompt image-token work is memory-bound there: measured 580 vs 365 ms for 10 g, Hiera-S).
            batched = self.batch_granularities if self.batch_granularities is not None else self.device.type != "cpu"
            chunk = n if batched else 1
            lows, iou_list = [], []
            for start in range(0, n, chunk):
                sl = slice(start, start + chunk)
                g_chunk = None if g_values is None else g_values[sl]
                m_chunk = None if mask_t is None else mask_t[sl]
                k = min(chunk, n - start)
                low_c, iou_c = self._decode(unnorm_coords, label_t, unnorm_box, m_chunk, g_chunk, multimask_output, k)
                if refine:
                    low_c, iou_c = self._decode(unnorm_coords, label_t, unnorm_box, low_c, g_chunk, False, k)
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
        """One decoder pass for ``n`` prompts sharing the clicks (batched over g); returns (N,1,h,w), (N,1).

        Runs in this predictor's precision context; logits and scores come back as float32.
        """
        points = None
        if coords is not None:
            points = (coords, labels)
        if boxes is not None:
            box_coords = boxes.reshape(-1, 2, 2)
            box_labels = torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device).repeat(box_coords.shape[0], 1)
            points = ((torch.cat([box_coords, points[0]], 1), torch.cat([box_labels, points[1]], 1))
                      if points is not None else (box_coords, box_labels))
        pe = self.model.sam_prompt_encoder
        with precision_context(self.device, self.precision):
            if self.has_granularity:
                g = None if g_values is None else torch.as_tensor(g_values, device=self.device)
                sparse, dense = pe(points=points, boxes=None, masks=mask_t, granularity=g)
                if g is None and _current_granularity(pe) is None and sparse.shape[0] != n:
                    sparse, dense = sparse.expand(n, -1, -1), dense.expand(n, -1, -1, -1)
            else:
                sparse, dense = pe(points=points, boxes=None, masks=mask_t)
            high_res = [f[-1:] for f in self._features["high_res_feats"]]
            low, ious, _, _ = self.model.sam_mask_decoder(
                image_embeddings=self._features["image_embed"][-1:], image_pe=pe.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                multimask_output=multimask_output, repeat_image=sparse.shape[0] > 1, high_res_features=high_res)
        return low.float(), ious.float()

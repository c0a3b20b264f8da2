"""Whole-image ("segment everything") segmentation at a chosen granularity (napari-free).

Same algorithm as Meta's ``SAM2AutomaticMaskGenerator`` (and UnSAMv2's fork of it, which adds the
granularity token): a grid of single-click prompts, batched decoding, filtering by predicted IoU and
stability score, box NMS, optional crops and small-region cleanup. Meta's utilities (point grids, crop
boxes, stability score, mask boxes, NMS) are imported, not copied.

What is done differently, and why it is faster with the SAME masks (checked against sam2's generator in
``tests/automatic`` and ``benchmarks/automatic_vs_sam2.py``):

- the embedding comes from the predictor's cache (``set_image`` on an image seen before skips the encoder;
  a hierarchy of several g values encodes once);
- the IoU filter runs on the decoder's output before anything is upsampled; sam2 upsamples every mask of a
  batch (3 per point) to full resolution first. With M2M refinement sam2 also upsamples the first-pass masks
  it then throws away; here nothing of the first pass is upsampled;
- survivors are upsampled in memory-bounded chunks, once for the stability score and box, and a second time
  only for the masks that survive NMS; no RLE encoding/decoding round trip;
- with a granularity model the decoder yields one mask per point instead of SAM's three.

Settings and their cost (``N = points_per_side ** 2`` prompts per crop; see docs/everything.md):
decoder passes ``N * (1 + use_m2m)`` per crop, encoder passes ``1 + sum_i 4**i`` for ``crop_n_layers``
(0 by default); memory grows with ``points_per_batch`` (decoder activations) and the image size (one
float mask per survivor during the stability pass, chunked to ~256 MB).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops.boxes import batched_nms, box_area

from sam2.utils.amg import (
    MaskData,
    batch_iterator,
    batched_mask_to_box,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    calculate_stability_score,
    generate_crop_boxes,
    is_box_near_crop_edge,
    uncrop_boxes_xyxy,
    uncrop_points,
)

from .normalize import check_image

__all__ = ["AutomaticSettings", "Cancelled", "generate", "model_defaults", "segment_everything", "segment_everything_stack",
           "records_to_labels", "default_thresholds"]

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]

#: bytes of float32 full-resolution masks held at once while computing stability scores and boxes
_CHUNK_BYTES = 256 * 2**20


class Cancelled(RuntimeError):
    """Raised inside :func:`generate` when the ``cancel`` callback (or Event) says stop."""


def default_thresholds(granularity: float | None) -> tuple[float, float]:
    """(pred_iou_thresh, stability_score_thresh): UnSAMv2's 0.65/0.7 for g < 0.5, 0.5/0.7 for g >= 0.5;
    sam2's own 0.8/0.95 for a stock model (granularity None)."""
    if granularity is None:
        return 0.8, 0.95
    return (0.65, 0.7) if granularity < 0.5 else (0.5, 0.7)


@dataclass
class AutomaticSettings:
    """Settings of the whole-image generator; the names and meanings are sam2's.

    Defaults are UnSAMv2's evaluation settings (GPU); :meth:`for_device` picks a cheaper grid on a CPU.

    points_per_side: grid of ``points_per_side**2`` click prompts; cost is linear in the number of points
        (64 -> 4096 decoder passes, 24 -> 576). Small objects need a dense grid: at least one point per object.
    points_per_batch: prompts decoded together; only speed and memory change, not the masks.
    pred_iou_thresh / stability_score_thresh: drop masks the model itself rates poorly / that change a lot
        when the logit threshold moves by ``stability_score_offset``.
    mask_threshold: logit threshold for binary masks (-1 in UnSAMv2's evaluation, 0 in sam2).
    box_nms_thresh: box IoU above which the lower-scored of two masks is a duplicate.
    crop_n_layers: >0 also runs on 4, 16, ... overlapping crops (one encoder pass each: expensive), for
        small objects in large images. crop_* are sam2's crop settings.
    min_mask_region_area: >0 removes islands and fills holes smaller than this (pixels) in the final masks,
        then re-runs NMS (SAM 1's post-processing; sam2 1.1.0 instead needs its CUDA extension).
    use_m2m: UnSAMv2's mask-to-mask refinement: a second decoder pass per mask with its own logits as
        input (doubles decoder cost, sharper masks).
    multimask_output: stock SAM 2: 3 masks per point (sam2's default). UnSAMv2 always returns one mask per
        point; the flag only selects its IoU head (max of the multimask tokens, as upstream).
    """

    points_per_side: int | None = 64
    points_per_batch: int = 128
    pred_iou_thresh: float = 0.65
    stability_score_thresh: float = 0.7
    stability_score_offset: float = 0.7
    mask_threshold: float = -1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    point_grids: list[np.ndarray] | None = field(default=None, repr=False)
    min_mask_region_area: int = 0
    use_m2m: bool = True
    multimask_output: bool = True

    @classmethod
    def upstream(cls, granularity: float | None = 0.5, **overrides) -> "AutomaticSettings":
        """UnSAMv2's evaluation settings (points_per_side 64, batch 128, M2M); sam2's stock generator
        thresholds for a stock model (granularity None)."""
        iou, stab = default_thresholds(granularity)
        base = cls(pred_iou_thresh=iou, stability_score_thresh=stab)
        if granularity is None:
            base = replace(base, stability_score_offset=1.0, mask_threshold=0.0, use_m2m=False)
        return replace(base, **overrides)

    @classmethod
    def for_device(cls, device: str | torch.device | None, granularity: float | None = 0.5,
                   **overrides) -> "AutomaticSettings":
        """Presets: ``cuda``/``mps``: upstream's (64 points per side); ``cpu``: 24 points per side, batch 64
        (576 prompts instead of 4096: ~7x less decoder work; objects smaller than ~1/24 of the image side
        may be missed)."""
        kind = torch.device(device).type if device is not None else "cpu"
        if kind == "cpu":
            overrides = {"points_per_side": 24, "points_per_batch": 64, **overrides}
        return cls.upstream(granularity, **overrides)

    def updated(self, **changes) -> "AutomaticSettings":
        """A copy with ``changes``; unknown names raise with the list of valid ones."""
        valid = {f.name for f in fields(self)}
        bad = sorted(set(changes) - valid)
        if bad:
            raise TypeError(f"unknown setting(s) {bad}; valid settings are {sorted(valid)}")
        return replace(self, **changes)

    def check(self) -> None:
        if (self.points_per_side is None) == (self.point_grids is None):
            raise ValueError("give exactly one of points_per_side (e.g. 32) or point_grids")
        if self.points_per_side is not None and self.points_per_side < 1:
            raise ValueError(f"points_per_side must be >= 1, got {self.points_per_side}")
        if self.points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {self.points_per_batch}")
        if self.crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be >= 0, got {self.crop_n_layers}")

    def grids(self) -> list[np.ndarray]:
        if self.point_grids is not None:
            return [np.asarray(g, np.float64) for g in self.point_grids]
        return build_all_layer_point_grids(self.points_per_side, self.crop_n_layers,
                                           self.crop_n_points_downscale_factor)


def model_defaults(predictor) -> dict:
    """Settings the predictor's model recommends (``LoadedModel.automatic_defaults``, e.g. the demo's)."""
    loaded = getattr(predictor, "loaded", None)
    return dict(getattr(loaded, "automatic_defaults", None) or {})


def _resolve(predictor, granularity: float | None, settings: AutomaticSettings | None,
             overrides: dict) -> AutomaticSettings:
    base = settings if settings is not None else AutomaticSettings.for_device(predictor.device, granularity,
                                                                             **model_defaults(predictor))
    s = base.updated(**overrides) if overrides else base
    s.check()
    return s


def _check_cancel(cancel) -> None:
    if cancel is None:
        return
    stop = cancel.is_set() if hasattr(cancel, "is_set") else cancel()
    if stop:
        raise Cancelled("segment everything was cancelled")


def _check_granularity(predictor, granularity):
    if granularity is None:
        return None
    if not getattr(predictor, "has_granularity", False):
        raise ValueError("this model has no granularity input (a stock SAM 2 model): pass granularity=None, or "
                         "load an UnSAMv2 model (gs.load_model('unsamv2-plus')) to choose a granularity")
    from ..models.unsamv2 import check_granularity

    check_granularity([granularity])
    return np.asarray([granularity], np.float32)


def _decode(predictor, coords, labels, mask_input, g_values, multimask: bool):
    """One batched decoder pass: (B, C, h, w) low-res logits and (B, C) predicted IoU."""
    return predictor._decode(coords, labels, None, mask_input, g_values, multimask, coords.shape[0])


def _upsample(low: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Low-res logits (N, h, w) -> (N, H, W), as ``SAM2Transforms.postprocess_masks`` without hole filling."""
    return F.interpolate(low[:, None].float(), hw, mode="bilinear", align_corners=False)[:, 0]


def _chunk(hw: tuple[int, int]) -> int:
    return max(1, _CHUNK_BYTES // (4 * hw[0] * hw[1]))


@torch.no_grad()
def _process_batch(predictor, points: np.ndarray, crop_hw, crop_box, orig_hw, g_values,
                   s: AutomaticSettings) -> MaskData:
    """Decode one batch of grid points and keep the masks that pass IoU, stability and crop-edge filters.

    Mirrors ``SAM2AutomaticMaskGenerator._process_batch`` step for step (same decoder batches, same
    comparisons), but filters on IoU before upsampling and keeps low-res logits instead of RLEs.
    """
    device = predictor.device
    pts = torch.as_tensor(points, dtype=torch.float32, device=device)
    in_pts = predictor._transforms.transform_coords(pts, normalize=True, orig_hw=crop_hw)
    in_labels = torch.ones(in_pts.shape[0], dtype=torch.int, device=device)
    low, iou = _decode(predictor, in_pts[:, None, :], in_labels[:, None], None, g_values, s.multimask_output)
    per_point = low.shape[1]
    low, iou = low.flatten(0, 1), iou.flatten(0, 1)
    pts = pts.repeat_interleave(per_point, dim=0)
    if s.use_m2m:
        # as sam2: refine every mask (its clamped logits as mask input), in batches of points_per_batch
        in_pts = predictor._transforms.transform_coords(pts, normalize=True, orig_hw=crop_hw)
        labels = torch.ones(in_pts.shape[0], dtype=torch.int, device=device)
        new_low, new_iou = [], []
        for p, lab, m in batch_iterator(s.points_per_batch, in_pts, labels, torch.clamp(low, -32.0, 32.0)):
            lo, io = _decode(predictor, p[:, None, :], lab[:, None], m[:, None], g_values, False)
            new_low.append(lo[:, 0])
            new_iou.append(io[:, 0])
        low, iou = torch.cat(new_low), torch.cat(new_iou)
    keep = iou > s.pred_iou_thresh if s.pred_iou_thresh > 0.0 else torch.ones_like(iou, dtype=torch.bool)
    low, iou, pts = low[keep], iou[keep], pts[keep]

    stab, boxes, areas = [], [], []
    for i in range(0, low.shape[0], _chunk(crop_hw)):
        up = _upsample(low[i: i + _chunk(crop_hw)], crop_hw)
        stab.append(calculate_stability_score(up, s.mask_threshold, s.stability_score_offset))
        binary = up > s.mask_threshold
        boxes.append(batched_mask_to_box(binary))
        areas.append(binary.flatten(1).sum(1))
        del up, binary
    if stab:
        stab_t, boxes_t, area_t = torch.cat(stab), torch.cat(boxes), torch.cat(areas)
    else:
        stab_t = iou.new_zeros(0)
        boxes_t = torch.zeros(0, 4, dtype=torch.int64, device=device)
        area_t = torch.zeros(0, dtype=torch.int64, device=device)
    data = MaskData(low=low.float(), iou_preds=iou.float(), points=pts, stability_score=stab_t, boxes=boxes_t,
                    areas=area_t)
    if s.stability_score_thresh > 0.0:
        data.filter(data["stability_score"] >= s.stability_score_thresh)
    x0, y0, x1, y1 = crop_box
    if (x0, y0, x1, y1) != (0, 0, orig_hw[1], orig_hw[0]):
        keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_hw[1], orig_hw[0]])
        if not torch.all(keep):
            data.filter(keep)
    return data


@dataclass
class _Result:
    """Survivors of all filters: low-res logits plus what the records need, in sam2's output order."""

    data: MaskData
    crop_boxes: list[list[int]]
    crop_hws: list[tuple[int, int]]
    orig_hw: tuple[int, int]
    mask_threshold: float
    fixed: dict = field(default_factory=dict)  # index -> cleaned bool mask (min_mask_region_area)

    def __len__(self) -> int:
        return int(self.data["iou_preds"].shape[0])

    def iter_masks(self, order: Sequence[int] | None = None) -> Iterator[tuple[int, np.ndarray, list[int]]]:
        """(index, bool mask in crop coordinates, crop box) for ``order`` (default: all, in order)."""
        order = range(len(self)) if order is None else order
        order = list(order)
        crop_idx = self.data["crop_idx"]
        for start in range(0, len(order), 32):
            idx = order[start: start + 32]
            for c in sorted({int(crop_idx[i]) for i in idx}):
                sel = [i for i in idx if int(crop_idx[i]) == c]
                up = _upsample(self.data["low"][torch.as_tensor(sel, device=self.data["low"].device)],
                               self.crop_hws[c]) > self.mask_threshold
                up = up.cpu().numpy()
                for k, i in enumerate(sel):
                    yield i, up[k], self.crop_boxes[c]


def _generate(predictor, image: np.ndarray, g_values, s: AutomaticSettings, progress, cancel) -> _Result:
    orig_hw = tuple(image.shape[:2])
    crop_boxes, layer_idxs = generate_crop_boxes(orig_hw, s.crop_n_layers, s.crop_overlap_ratio)
    grids = s.grids()
    if len(grids) < s.crop_n_layers + 1:
        raise ValueError(f"point_grids has {len(grids)} grid(s) but crop_n_layers={s.crop_n_layers} needs "
                         f"{s.crop_n_layers + 1} (one per layer)")
    total = sum(math.ceil(len(grids[layer]) / s.points_per_batch) for layer in layer_idxs)
    done = 0
    if progress is not None:
        progress(0, total)
    data = MaskData()
    crop_hws = []
    for ci, (crop_box, layer) in enumerate(zip(crop_boxes, layer_idxs)):
        _check_cancel(cancel)
        x0, y0, x1, y1 = crop_box
        cropped = image[y0:y1, x0:x1]
        crop_hw = tuple(cropped.shape[:2])
        crop_hws.append(crop_hw)
        predictor.set_image(cropped)  # cache hit for an image seen before (e.g. another g)
        points = grids[layer] * np.array(crop_hw)[None, ::-1]
        crop_data = MaskData()
        for (batch,) in batch_iterator(s.points_per_batch, points):
            _check_cancel(cancel)
            crop_data.cat(_process_batch(predictor, batch, crop_hw, crop_box, orig_hw, g_values, s))
            done += 1
            if progress is not None:
                progress(done, total)
        if len(crop_data.items()) == 0:
            continue
        keep = batched_nms(crop_data["boxes"].float(), crop_data["iou_preds"],
                           torch.zeros_like(crop_data["boxes"][:, 0]), iou_threshold=s.box_nms_thresh)
        crop_data.filter(keep)
        crop_data["boxes"] = uncrop_boxes_xyxy(crop_data["boxes"], crop_box)
        crop_data["points"] = uncrop_points(crop_data["points"], crop_box)
        n = crop_data["boxes"].shape[0]
        crop_data["crop_idx"] = torch.full((n,), ci, dtype=torch.int64)
        crop_data["crop_boxes"] = torch.tensor([crop_box] * n, dtype=torch.int64).reshape(n, 4)
        data.cat(crop_data)
    if len(data.items()) == 0:
        data = MaskData(low=torch.zeros(0, 1, 1), iou_preds=torch.zeros(0), points=torch.zeros(0, 2),
                        stability_score=torch.zeros(0), boxes=torch.zeros(0, 4, dtype=torch.int64),
                        areas=torch.zeros(0, dtype=torch.int64), crop_idx=torch.zeros(0, dtype=torch.int64),
                        crop_boxes=torch.zeros(0, 4, dtype=torch.int64))
    elif len(crop_boxes) > 1:
        scores = (1 / box_area(data["crop_boxes"])).to(data["boxes"].device)
        keep = batched_nms(data["boxes"].float(), scores, torch.zeros_like(data["boxes"][:, 0]),
                           iou_threshold=s.crop_nms_thresh)
        data.filter(keep)
    result = _Result(data, crop_boxes, crop_hws, orig_hw, s.mask_threshold)
    if s.min_mask_region_area > 0 and len(result):
        result = _cleanup_small_regions(result, s.min_mask_region_area, s.box_nms_thresh)
    return result


def _remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """``sam2.utils.amg.remove_small_regions`` (8-connectivity) when OpenCV is installed, else the same
    with scipy (OpenCV is not a dependency of this plugin)."""
    try:
        import cv2  # noqa: F401
        from sam2.utils.amg import remove_small_regions

        return remove_small_regions(mask, area_thresh, mode)
    except ImportError:
        pass
    from scipy import ndimage

    holes = mode == "holes"
    working = holes ^ mask
    regions, n = ndimage.label(working, structure=np.ones((3, 3), bool))
    sizes = np.bincount(regions.ravel(), minlength=n + 1)[1:]
    small = [i + 1 for i, sz in enumerate(sizes) if sz < area_thresh]
    if not small:
        return mask, False
    fill = [0] + small
    if not holes:
        fill = [i for i in range(n + 1) if i not in fill] or [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True


def _cleanup_small_regions(result: _Result, min_area: int, nms_thresh: float) -> _Result:
    """SAM's post-processing: remove small islands and holes, then NMS preferring unchanged masks.

    Changed masks are kept (full crop resolution, bool) in ``result.fixed``; boxes and areas are updated.
    """
    fixed, scores, boxes, areas = {}, [], [], []
    for i, mask, _ in result.iter_masks():
        m, changed_h = _remove_small_regions(mask, min_area, "holes")
        m, changed_i = _remove_small_regions(m, min_area, "islands")
        scores.append(float(not (changed_h or changed_i)))
        if changed_h or changed_i:
            fixed[i] = m
        boxes.append(batched_mask_to_box(torch.as_tensor(m)[None])[0])
        areas.append(int(m.sum()))
    crop_off = result.data["crop_boxes"][:, :2].repeat(1, 2).cpu()
    box_t = torch.stack(boxes).cpu() + crop_off
    keep = batched_nms(box_t.float(), torch.as_tensor(scores), torch.zeros(len(scores)), iou_threshold=nms_thresh)
    dev = result.data["boxes"].device
    result.data["boxes"] = box_t.to(dev)
    result.data["areas"] = torch.as_tensor(areas, dtype=torch.int64, device=dev)
    result.data.filter(keep)
    result.fixed = {j: fixed[int(k)] for j, k in enumerate(keep.tolist()) if int(k) in fixed}
    return result


def _materialize(result: _Result, order: Sequence[int] | None = None) -> Iterator[tuple[int, np.ndarray, list[int]]]:
    for i, mask, crop_box in result.iter_masks(order):
        yield i, result.fixed.get(i, mask), crop_box


def _to_full(mask: np.ndarray, crop_box: list[int], orig_hw: tuple[int, int]) -> np.ndarray:
    x0, y0, x1, y1 = crop_box
    if (x0, y0, x1, y1) == (0, 0, orig_hw[1], orig_hw[0]):
        return mask
    full = np.zeros(orig_hw, bool)
    full[y0:y1, x0:x1] = mask
    return full


def _run(predictor, image, granularity, settings, progress, cancel, overrides) -> _Result:
    image = check_image(image)
    g_values = _check_granularity(predictor, granularity)
    s = _resolve(predictor, granularity, settings, overrides)
    return _generate(predictor, image, g_values, s, progress, cancel)


@torch.no_grad()
def generate(predictor, image: np.ndarray, granularity: float | None = 0.5,
             settings: AutomaticSettings | None = None, progress: Progress | None = None,
             cancel: Cancel | None = None, **overrides) -> list[dict]:
    """SAM-style mask records of the whole image at ``granularity``.

    predictor: a :class:`~napari_granseg.engine.interactive.GranularityPredictor` (its embedding cache is
    used). granularity: float in [0.1, 1] for UnSAMv2; None for a stock SAM 2 model. settings: an
    :class:`AutomaticSettings` (default: :meth:`AutomaticSettings.for_device` of the predictor's device);
    keyword overrides change single fields. progress(done, total) is called after each decoder batch;
    cancel() returning True (or a set ``threading.Event``) raises :class:`Cancelled` between batches.

    Returns, as sam2's generator (``output_mode='binary_mask'``), one dict per mask, best predicted IoU
    first: segmentation (H, W) bool, area, bbox (x, y, w, h), predicted_iou, point_coords [[x, y]],
    stability_score, crop_box (x, y, w, h).
    """
    result = _run(predictor, image, granularity, settings, progress, cancel, overrides)
    records = []
    d = result.data
    for i, mask, crop_box in _materialize(result):
        full = _to_full(mask, crop_box, result.orig_hw)
        records.append({
            "segmentation": full,
            "area": int(full.sum()),
            "bbox": box_xyxy_to_xywh(d["boxes"][i].float().cpu().numpy()).tolist(),
            "predicted_iou": float(d["iou_preds"][i]),
            "point_coords": [d["points"][i].float().cpu().numpy().tolist()],
            "stability_score": float(d["stability_score"][i]),
            "crop_box": box_xyxy_to_xywh(np.asarray(crop_box, np.float32)).tolist(),
        })
    return records


def records_to_labels(records: Sequence[dict], shape: tuple[int, int]) -> tuple[np.ndarray, list[int]]:
    """Paint masks into an int32 instance image, largest first so smaller (inner) ones stay visible.

    Returns (labels, record index per label id): label ``k`` (1-based) is ``records[index[k - 1]]``.
    Masks left with no visible pixel are dropped and ids are consecutive.
    """
    order = sorted(range(len(records)), key=lambda i: -records[i]["area"])
    labels = np.zeros(shape, np.int32)
    for k, i in enumerate(order, start=1):
        labels[records[i]["segmentation"]] = k
    return _compact(labels, order)


def _compact(labels: np.ndarray, order: list[int]) -> tuple[np.ndarray, list[int]]:
    present = np.unique(labels)
    present = present[present > 0]
    lut = np.zeros(len(order) + 1, np.int32)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    return lut[labels], [order[k - 1] for k in present.tolist()]


@torch.no_grad()
def segment_everything(predictor, image: np.ndarray, granularity: float | None = 0.5,
                       progress: Progress | None = None, cancel: Cancel | None = None,
                       settings: AutomaticSettings | None = None, return_info: bool = False,
                       **overrides):
    """Instance labels (int32, ids 1..n) of everything in ``image`` at ``granularity``.

    Painting order: larger masks first, so a smaller mask lying on a larger one (a nucleus on its cell)
    stays visible and the larger keeps the rest of its pixels; ids follow that order (1 = largest).
    ``overrides``: any :class:`AutomaticSettings` field (e.g. ``points_per_side=32``).
    With ``return_info``: also a list of dicts per label id (predicted_iou, stability_score, point_coords,
    area before painting).
    """
    image = check_image(image)
    result = _run(predictor, image, granularity, settings, progress, cancel, overrides)
    d = result.data
    areas = d["areas"].cpu().numpy() if len(result) else np.zeros(0, np.int64)
    order = sorted(range(len(result)), key=lambda i: (-int(areas[i]), i))
    labels = np.zeros(result.orig_hw, np.int32)
    pos = {i: k for k, i in enumerate(order, start=1)}
    for i, mask, (x0, y0, x1, y1) in _materialize(result, order):
        labels[y0:y1, x0:x1][mask] = pos[i]
    labels, kept = _compact(labels, order)
    if not return_info:
        return labels
    info = [{"predicted_iou": float(d["iou_preds"][i]), "stability_score": float(d["stability_score"][i]),
             "point_coords": d["points"][i].float().cpu().numpy().tolist(), "mask_area": int(areas[i])}
            for i in kept]
    return labels, info


def segment_everything_stack(predictor, stack: np.ndarray, granularity: float | None = 0.5,
                             progress: Progress | None = None, cancel: Cancel | None = None,
                             settings: AutomaticSettings | None = None, **overrides) -> np.ndarray:
    """:func:`segment_everything` on each slice of a (Z, H, W[, 3]) stack -> (Z, H, W) int32.

    Ids are unique across the whole stack (slice z's ids follow slice z-1's): slices are segmented
    independently, so the same id on two slices would wrongly claim the same object. Use propagation
    (``gs.propagate``) to follow objects through z/t.
    """
    stack = np.asarray(stack)
    if stack.ndim < 3 or (stack.ndim == 3 and stack.shape[-1] in (3, 4) and stack.shape[0] > 4):
        raise ValueError(f"expected a stack of 2D slices (Z, H, W) or (Z, H, W, 3), got shape {stack.shape}; "
                         f"for one image use segment_everything")
    out = np.zeros(stack.shape[:3], np.int32)
    n = stack.shape[0]
    offset = 0
    for z in range(n):
        def slice_progress(done, total, z=z):
            if progress is not None:
                progress(z * total + done, n * total)

        lab = segment_everything(predictor, stack[z], granularity, slice_progress, cancel, settings, **overrides)
        out[z] = np.where(lab > 0, lab + offset, 0)
        offset += int(lab.max())
    return out


def eval_segmenter(model, granularities: Sequence[float] = tuple(np.round(np.arange(0.1, 1.01, 0.1), 2)),
                   **overrides):
    """A whole-image proposal function for evaluation (``granseg-eval whole``): ``image -> [(mask, score)]``.

    As upstream's evaluation, masks from every g in ``granularities`` are pooled; the score is the
    predicted IoU. ``model``: a LoadedModel (UnSAMv2) or a GranularityPredictor.
    """
    from .interactive import GranularityPredictor

    predictor = model if isinstance(model, GranularityPredictor) else GranularityPredictor(model, mask_threshold=-1.0)

    def segment(image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        out: list[tuple[np.ndarray, float]] = []
        for g in granularities:
            for rec in generate(predictor, image, float(g), **overrides):
                out.append((rec["segmentation"], rec["predicted_iou"]))
        return out

    return segment

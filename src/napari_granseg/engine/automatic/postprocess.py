"""From the decoder's low-resolution logits to the masks segment everything returns: filters, NMS,
small-region cleanup, SAM-style records and instance labels.

Each step is the one of Meta's ``SAM2AutomaticMaskGenerator`` (its utilities in ``sam2.utils.amg`` are
imported, not copied) with the same comparisons, so a stock model gives sam2's masks exactly. What differs is
only when full-resolution masks exist, which is where sam2's generator spends its time and memory:

- masks are kept as low-resolution logits (256 x 256 per mask) and upsampled in memory-bounded chunks, once
  for the stability score and box, and again only for the masks that survive every filter and NMS;
- the IoU filter runs before anything is upsampled;
- no RLE encoding/decoding round trip.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops.boxes import batched_nms, box_area

from sam2.utils.amg import (
    MaskData,
    batched_mask_to_box,
    box_xyxy_to_xywh,
    calculate_stability_score,
    is_box_near_crop_edge,
    uncrop_boxes_xyxy,
    uncrop_points,
)

from .settings import AutomaticSettings

__all__ = ["MaskResult", "filter_masks", "suppress_within_crop", "suppress_across_crops", "remove_small_regions",
           "cleanup_small_regions", "to_records", "to_labels", "records_to_labels", "empty_mask_data"]

#: bytes of float32 full-resolution masks held at once while computing stability scores and boxes: bounds the
#: memory of a run whatever the image size and the number of masks
CHUNK_BYTES = 256 * 2**20
#: masks upsampled together when materialising the final masks
_MATERIALIZE_BATCH = 32


def upsample(low: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Low-res logits (N, h, w) -> (N, H, W), as ``SAM2Transforms.postprocess_masks`` without hole filling."""
    return F.interpolate(low[:, None].float(), hw, mode="bilinear", align_corners=False)[:, 0]


def _chunk(hw: tuple[int, int]) -> int:
    return max(1, CHUNK_BYTES // (4 * hw[0] * hw[1]))


def filter_masks(low: torch.Tensor, iou: torch.Tensor, points: torch.Tensor, crop_hw: tuple[int, int],
                 crop_box: list[int], orig_hw: tuple[int, int], s: AutomaticSettings) -> MaskData:
    """Keep the masks of one decoded batch that pass the IoU, stability and crop-edge filters.

    ``low`` (N, h, w) logits, ``iou`` (N,) predicted IoU, ``points`` (N, 2) the click of each mask in crop
    pixels. Same tests in the same order as ``SAM2AutomaticMaskGenerator._process_batch``; the IoU test runs
    first, on the logits, so that rejected masks are never upsampled.
    """
    keep = iou > s.pred_iou_thresh if s.pred_iou_thresh > 0.0 else torch.ones_like(iou, dtype=torch.bool)
    low, iou, points = low[keep], iou[keep], points[keep]
    device = low.device
    stab, boxes, areas = [], [], []
    step = _chunk(crop_hw)
    for i in range(0, low.shape[0], step):
        up = upsample(low[i: i + step], crop_hw)
        stab.append(calculate_stability_score(up, s.mask_threshold, s.stability_score_offset))
        binary = up > s.mask_threshold
        boxes.append(batched_mask_to_box(binary))
        areas.append(binary.flatten(1).sum(1))
        del up, binary
    if stab:
        stab_t, boxes_t, area_t = torch.cat(stab), torch.cat(boxes), torch.cat(areas)
    else:
        stab_t = iou.new_zeros(0).float()
        boxes_t = torch.zeros(0, 4, dtype=torch.int64, device=device)
        area_t = torch.zeros(0, dtype=torch.int64, device=device)
    data = MaskData(low=low.float(), iou_preds=iou.float(), points=points, stability_score=stab_t, boxes=boxes_t,
                    areas=area_t)
    if s.stability_score_thresh > 0.0:
        data.filter(data["stability_score"] >= s.stability_score_thresh)
    x0, y0, x1, y1 = crop_box
    if (x0, y0, x1, y1) != (0, 0, orig_hw[1], orig_hw[0]):
        keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_hw[1], orig_hw[0]])
        if not torch.all(keep):
            data.filter(keep)
    return data


def suppress_within_crop(data: MaskData, crop_box: list[int], crop_index: int, nms_thresh: float) -> MaskData:
    """Box NMS among one crop's masks (best predicted IoU wins), then boxes and points in image pixels."""
    keep = batched_nms(data["boxes"].float(), data["iou_preds"], torch.zeros_like(data["boxes"][:, 0]),
                       iou_threshold=nms_thresh)
    data.filter(keep)
    data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
    data["points"] = uncrop_points(data["points"], crop_box)
    n = data["boxes"].shape[0]
    data["crop_idx"] = torch.full((n,), crop_index, dtype=torch.int64)
    data["crop_boxes"] = torch.tensor([crop_box] * n, dtype=torch.int64).reshape(n, 4)
    return data


def suppress_across_crops(data: MaskData, nms_thresh: float) -> MaskData:
    """Box NMS between crops: of two duplicates the one from the smaller crop (seen at higher resolution) wins."""
    scores = (1 / box_area(data["crop_boxes"])).to(data["boxes"].device)
    keep = batched_nms(data["boxes"].float(), scores, torch.zeros_like(data["boxes"][:, 0]),
                       iou_threshold=nms_thresh)
    data.filter(keep)
    return data


def empty_mask_data() -> MaskData:
    """The result of a run where no mask survived, with every field the records need."""
    return MaskData(low=torch.zeros(0, 1, 1), iou_preds=torch.zeros(0), points=torch.zeros(0, 2),
                    stability_score=torch.zeros(0), boxes=torch.zeros(0, 4, dtype=torch.int64),
                    areas=torch.zeros(0, dtype=torch.int64), crop_idx=torch.zeros(0, dtype=torch.int64),
                    crop_boxes=torch.zeros(0, 4, dtype=torch.int64))


@dataclass
class MaskResult:
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
        """(index, bool mask in crop coordinates, crop box) for ``order`` (default: all, in order), with the
        small-region cleanup applied; masks are upsampled a few at a time so memory stays bounded."""
        order = list(range(len(self)) if order is None else order)
        crop_idx = self.data["crop_idx"]
        low = self.data["low"]
        for start in range(0, len(order), _MATERIALIZE_BATCH):
            idx = order[start: start + _MATERIALIZE_BATCH]
            for c in sorted({int(crop_idx[i]) for i in idx}):
                sel = [i for i in idx if int(crop_idx[i]) == c]
                up = upsample(low[torch.as_tensor(sel, device=low.device)], self.crop_hws[c]) > self.mask_threshold
                up = up.cpu().numpy()
                for k, i in enumerate(sel):
                    yield i, self.fixed.get(i, up[k]), self.crop_boxes[c]


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """``sam2.utils.amg.remove_small_regions`` (8-connectivity) when OpenCV is installed, else the same
    with scipy (OpenCV is not a dependency of this plugin). ``mode``: "holes" or "islands"."""
    try:
        import cv2  # noqa: F401
        from sam2.utils.amg import remove_small_regions as sam2_remove_small_regions

        return sam2_remove_small_regions(mask, area_thresh, mode)
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


def cleanup_small_regions(result: MaskResult, min_area: int, nms_thresh: float, cancel=None) -> MaskResult:
    """SAM's post-processing: remove small islands and holes, then NMS preferring unchanged masks.

    Changed masks are kept (full crop resolution, bool) in ``result.fixed``; boxes and areas are updated.
    ``cancel``: a callable raising when the user cancelled, called once per mask (this pass is per-pixel
    work on every surviving mask, long on large images).
    """
    fixed, scores, boxes, areas = {}, [], [], []
    for i, mask, _ in result.iter_masks():
        if cancel is not None:
            cancel()
        m, changed_h = remove_small_regions(mask, min_area, "holes")
        m, changed_i = remove_small_regions(m, min_area, "islands")
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


def _to_full(mask: np.ndarray, crop_box: list[int], orig_hw: tuple[int, int]) -> np.ndarray:
    x0, y0, x1, y1 = crop_box
    if (x0, y0, x1, y1) == (0, 0, orig_hw[1], orig_hw[0]):
        return mask
    full = np.zeros(orig_hw, bool)
    full[y0:y1, x0:x1] = mask
    return full


def to_records(result: MaskResult) -> list[dict]:
    """sam2's ``binary_mask`` records, one per mask, in the generator's order (the records
    ``napari_granseg.engine.automatic.generate`` returns)."""
    records = []
    d = result.data
    for i, mask, crop_box in result.iter_masks():
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


def _compact(labels: np.ndarray, order: list[int]) -> tuple[np.ndarray, list[int]]:
    """Renumber the ids still visible to 1..n (painting order kept); returns the mask index per new id."""
    present = np.unique(labels)
    present = present[present > 0]
    lut = np.zeros(len(order) + 1, np.int32)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    return lut[labels], [order[k - 1] for k in present.tolist()]


def to_labels(result: MaskResult) -> tuple[np.ndarray, list[dict]]:
    """An int32 instance image painted largest mask first (so a nucleus on its cell stays visible), ids
    consecutive in that order, and per id: predicted_iou, stability_score, point_coords, mask_area.

    The masks are painted straight from the low-res logits, crop by crop, without building records.
    """
    d = result.data
    areas = d["areas"].cpu().numpy() if len(result) else np.zeros(0, np.int64)
    order = sorted(range(len(result)), key=lambda i: (-int(areas[i]), i))
    labels = np.zeros(result.orig_hw, np.int32)
    position = {i: k for k, i in enumerate(order, start=1)}
    for i, mask, (x0, y0, x1, y1) in result.iter_masks(order):
        labels[y0:y1, x0:x1][mask] = position[i]
    labels, kept = _compact(labels, order)
    info = [{"predicted_iou": float(d["iou_preds"][i]), "stability_score": float(d["stability_score"][i]),
             "point_coords": d["points"][i].float().cpu().numpy().tolist(), "mask_area": int(areas[i])}
            for i in kept]
    return labels, info


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

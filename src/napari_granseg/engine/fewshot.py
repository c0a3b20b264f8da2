"""Few-shot segmentation with SANSA: label a few images, segment the same class in every other one.

A SANSA episode is a pseudo-video for SAM 2's memory: reference frames 0..k-1 (each with a mask, points,
box or scribble) then the target frame k. Frame roles follow upstream exactly (see the spec):

- reference 0: ``track_step(0, is_init_cond_frame=True, mask_inputs=...)`` -> ``cond_frame_outputs``;
- references i >= 1: ``track_step(i, True, ...)`` -> ``non_cond_frame_outputs`` (ordinary past memories);
- target: ``track_step(k, False, ...)`` with no prompt and ``run_mem_encoder=False``; multimask output
  with the best predicted IoU kept (``multimask_max_pt_num = 0``, set by :class:`SansaModel`).

Why a reusable memory: upstream re-encodes the references for every target (one episode per target). The
target never writes to the memory (``run_mem_encoder=False``), so the reference memory is built once here
and every target of a series runs against it: N targets cost N image encodings instead of N x (k + 1),
with the same outputs (:meth:`FewShotSegmenter.segment_episode_reference` is the per-target path, kept
for tests and the benchmark).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .normalize import ImageShapeError, check_image, to_model_rgb, to_model_rgb_range

__all__ = ["FewShotSegmenter", "FewShotResult", "FewShotError", "encode_frames", "build_memory",
           "target_step", "preprocess_image", "preprocess_mask", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Features = tuple  # (vision_feats: list[(HW, B, C)], vision_pos_embeds: list, feat_sizes: list[(h, w)])


class FewShotError(ValueError):
    """A few-shot request the engine cannot run (no reference, empty mask, ...), with what to do."""


@dataclass
class FewShotResult:
    """mask: (H, W) bool at the target's size; logits: the model's low-res logits (h, w) float32 (256x256
    for 1024 px models); probability: sigmoid of the logits upsampled to (H, W), float32."""

    mask: np.ndarray
    logits: np.ndarray
    probability: np.ndarray


# ----------------------------------------------------------------------------------------------- episode core
def encode_frames(sam: torch.nn.Module, images: torch.Tensor) -> list[Features]:
    """Run the (adapted) image encoder once over ``images`` (N, 3, S, S); one feature tuple per image."""
    backbone_out = sam.forward_image(images)
    _, feats, pos, sizes = sam._prepare_backbone_features(backbone_out)
    return [([f[:, i:i + 1] for f in feats], [p[:, i:i + 1] for p in pos], sizes) for i in range(images.shape[0])]


def split_batch(features: Features, batch: int) -> list[Features]:
    """Split features of T*B images (frame-major) into T per-frame tuples with batch B (training)."""
    feats, pos, sizes = features
    n = feats[0].shape[1] // batch
    return [([f[:, t * batch:(t + 1) * batch] for f in feats], [p[:, t * batch:(t + 1) * batch] for p in pos], sizes)
            for t in range(n)]


def encode_batch(sam: torch.nn.Module, images: torch.Tensor) -> Features:
    """Encoder over (N, 3, S, S) keeping the batch together (N on dim 1 of the flattened features)."""
    _, feats, pos, sizes = sam._prepare_backbone_features(sam.forward_image(images))
    return feats, pos, sizes


def build_memory(sam: torch.nn.Module, ref_features: Sequence[Features], ref_prompts: Sequence[dict],
                 num_frames: int) -> tuple[dict, list[dict]]:
    """Encode references 0..k-1 into SAM 2's memory (``output_dict``) with upstream's frame roles.

    ``ref_prompts[i]``: ``{"mask_inputs": (B,1,S,S) or None, "point_inputs": {point_coords, point_labels}
    or None}``. Returns ``(output_dict, per-reference outputs)``.
    """
    output_dict: dict[str, dict[int, Any]] = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    outs = []
    for i, (feats, prompt) in enumerate(zip(ref_features, ref_prompts)):
        vision_feats, vision_pos, sizes = feats
        out = sam.track_step(
            frame_idx=i, is_init_cond_frame=True, current_vision_feats=vision_feats,
            current_vision_pos_embeds=vision_pos, feat_sizes=sizes,
            point_inputs=prompt.get("point_inputs"), mask_inputs=prompt.get("mask_inputs"),
            output_dict=output_dict, num_frames=num_frames, run_mem_encoder=True)
        output_dict["cond_frame_outputs" if i == 0 else "non_cond_frame_outputs"][i] = out
        outs.append(out)
    return output_dict, outs


def target_step(sam: torch.nn.Module, features: Features, output_dict: dict, frame_idx: int,
                num_frames: int) -> dict:
    """The target frame: reads the memory, no prompt, writes nothing (``run_mem_encoder=False``)."""
    vision_feats, vision_pos, sizes = features
    return sam.track_step(
        frame_idx=frame_idx, is_init_cond_frame=False, current_vision_feats=vision_feats,
        current_vision_pos_embeds=vision_pos, feat_sizes=sizes, point_inputs=None, mask_inputs=None,
        output_dict=output_dict, num_frames=num_frames, run_mem_encoder=False)


# ------------------------------------------------------------------------------------------- preprocessing
def preprocess_image(rgb01: np.ndarray, model_size: int, image_size: int | None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W, 3) float in [0, 1] -> (1, 3, S, S): ImageNet normalisation, square resize to ``image_size``
    (upstream's 640 / 518; None skips it) then to the model size, bilinear antialiased."""
    t = torch.from_numpy(np.ascontiguousarray(rgb01, np.float32)).permute(2, 0, 1)[None].to(device)
    mean = torch.tensor(IMAGENET_MEAN, device=t.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=t.device).view(1, 3, 1, 1)
    t = (t - mean) / std
    for size in ([image_size] if image_size else []) + [model_size]:
        if tuple(t.shape[-2:]) != (size, size):
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t


def preprocess_mask(mask: np.ndarray, model_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W) -> (1, 1, S, S) bool: bilinear antialiased resize to the model size, then > 0 (upstream)."""
    t = torch.from_numpy(np.ascontiguousarray(np.asarray(mask) > 0, np.float32))[None, None].to(device)
    if tuple(t.shape[-2:]) != (model_size, model_size):
        t = F.interpolate(t, size=(model_size, model_size), mode="bilinear", align_corners=False, antialias=True)
    return t > 0


def _xy(points, name: str) -> np.ndarray:
    arr = np.asarray(points, np.float32)
    if arr.ndim == 1 and arr.size == 2:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise FewShotError(f"{name} must be a list of [x, y] pixel coordinates, got shape {arr.shape}.")
    return arr


@dataclass
class _Reference:
    image: torch.Tensor          # (1, 3, S, S) preprocessed
    shape: tuple[int, int]
    mask: torch.Tensor | None    # (1, 1, S, S) bool
    points: dict | None          # sam2 point_inputs

    def prompt(self) -> dict:
        return {"mask_inputs": self.mask, "point_inputs": self.points}


class FewShotSegmenter:
    """Segment, in target images, the class shown in a few references (SANSA).

    ``model``: a ``LoadedModel`` of kind "sansa" or a ``SansaModel``. ``image_size``: upstream's square
    pre-resize (640 for natural images, 518 for FSS-1000/medical; None to resize straight to the model's
    size). ``intensity_range``: (lo, hi) for non-uint8 data so that every image of a series is scaled alike
    (default: each image by its own 0.5-99.5 percentiles, see ``engine.normalize``).

    >>> fs = FewShotSegmenter(model); fs.add_reference(img0, mask=m0); res = fs.segment(img5)
    """

    def __init__(self, model: Any, image_size: int | None = 640,
                 intensity_range: tuple[float, float] | None = None, autocast: bool | None = None):
        module = getattr(model, "module", model)
        kind = getattr(model, "kind", "sansa")
        if kind != "sansa" or not hasattr(module, "sam"):
            raise TypeError(f"FewShotSegmenter needs a SANSA model (load_model('sansa-universal') or "
                            f"kind='sansa'), got {model!r}")
        self.loaded = model if module is not model else None
        self.model = module
        self.sam = module.sam
        self.image_size = image_size
        self.intensity_range = intensity_range
        self.autocast = autocast
        self._refs: list[_Reference] = []
        self._memory: dict | None = None

    # --------------------------------------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _amp(self):
        """The autocast context for model calls (see ``autocast`` in the class docstring)."""
        from ..devices import autocast_for

        device = self.device
        enabled = self.autocast
        if enabled is None:
            enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return autocast_for(device, enabled)

    @property
    def model_size(self) -> int:
        return int(self.sam.image_size)

    @property
    def num_references(self) -> int:
        return len(self._refs)

    def _rgb(self, image: np.ndarray) -> np.ndarray:
        image = check_image(image)
        if self.intensity_range is not None and image.dtype != np.uint8:
            return to_model_rgb_range(image, *self.intensity_range)
        return to_model_rgb(image)

    def _prep(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        image = check_image(image)
        return preprocess_image(self._rgb(image), self.model_size, self.image_size, self.device), image.shape[:2]

    def _make_reference(self, image, mask=None, points=None, box=None, scribble=None) -> _Reference:
        tensor, shape = self._prep(image)
        if mask is not None and (points is not None or box is not None or scribble is not None):
            raise FewShotError("give a reference either a mask or points/box/scribble, not both.")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != tuple(shape):
                raise FewShotError(f"reference mask shape {mask.shape} differs from its image's {tuple(shape)}; "
                                   f"pass the mask of this very image (same height and width).")
            if not (mask > 0).any():
                raise FewShotError("reference mask is empty: label at least one object of the class in each "
                                   "reference (or drop this reference).")
            m = preprocess_mask(mask, self.model_size, self.device)
            if not m.any():  # pragma: no cover - a non-empty mask keeps >0 pixels after antialiased resize
                raise FewShotError("reference mask vanished after resizing; label a larger region.")
            return _Reference(tensor, shape, m, None)
        coords, labels = [], []
        if points is not None:
            p = _xy(points, "points")
            coords.append(p)
            labels.append(np.ones(len(p), np.int32))
        if scribble is not None:
            p = _xy(scribble, "scribble")
            coords.append(p)
            labels.append(np.ones(len(p), np.int32))
        if box is not None:
            b = np.asarray(box, np.float32).reshape(-1)
            if b.size != 4 or b[2] < b[0] or b[3] < b[1]:
                raise FewShotError(f"box must be [x0, y0, x1, y1] with x0 <= x1 and y0 <= y1, got {box!r}.")
            coords.append(b.reshape(2, 2))
            labels.append(np.array([2, 3], np.int32))
        if not coords:
            raise FewShotError("add_reference needs a prompt: mask=, points=, box= or scribble=.")
        xy = np.concatenate(coords).astype(np.float32)
        h, w = shape
        if (xy[:, 0] < 0).any() or (xy[:, 1] < 0).any() or (xy[:, 0] > w).any() or (xy[:, 1] > h).any():
            raise FewShotError(f"prompt coordinates must be (x, y) pixels inside the {w}x{h} image; got {xy.tolist()[:4]}.")
        xy = xy * np.array([self.model_size / w, self.model_size / h], np.float32)
        point_inputs = {"point_coords": torch.from_numpy(xy)[None].to(self.device),
                        "point_labels": torch.from_numpy(np.concatenate(labels))[None].to(self.device)}
        return _Reference(tensor, shape, None, point_inputs)

    # ----------------------------------------------------------------------------------------- references
    def add_reference(self, image: np.ndarray, mask: np.ndarray | None = None, points=None, box=None,
                      scribble=None) -> int:
        """Add one reference (image + mask, or points [[x, y], ...], box [x0, y0, x1, y1], scribble [[x, y],
        ...] in pixels). The first reference is the conditioning frame. Returns the number of references."""
        self._refs.append(self._make_reference(image, mask, points, box, scribble))
        self._memory = None
        return len(self._refs)

    def clear_references(self) -> None:
        """Forget all references (and their memory)."""
        self._refs.clear()
        self._memory = None

    def _require_refs(self) -> None:
        if not self._refs:
            raise FewShotError("no reference added: call add_reference(image, mask=...) with at least one "
                               "labelled example of the class before segmenting.")

    @torch.inference_mode()
    def _memory_dict(self) -> dict:
        self._require_refs()
        if self._memory is None:
            self.model.eval()
            with self._amp():
                feats = [encode_frames(self.sam, r.image)[0] for r in self._refs]
                self._memory, _ = build_memory(self.sam, feats, [r.prompt() for r in self._refs],
                                               len(self._refs) + 1)
        return self._memory

    # -------------------------------------------------------------------------------------------- targets
    def _readout(self, low_res: torch.Tensor, shape: tuple[int, int]) -> FewShotResult:
        up = F.interpolate(low_res.float(), size=tuple(shape), mode="bilinear", align_corners=False)[0, 0]
        prob = torch.sigmoid(up)
        return FewShotResult(mask=(up > 0).cpu().numpy(), logits=low_res[0, 0].float().cpu().numpy(),
                             probability=prob.cpu().numpy().astype(np.float32))

    @torch.inference_mode()
    def _target_logits(self, features: Features, memory: dict, k: int) -> torch.Tensor:
        with self._amp():
            return target_step(self.sam, features, memory, frame_idx=k, num_frames=k + 1)["pred_masks"]

    def _encode(self, tensor: torch.Tensor) -> Features:
        with self._amp():
            return encode_frames(self.sam, tensor)[0]

    @torch.inference_mode()
    def segment(self, target: np.ndarray) -> FewShotResult:
        """Segment the references' class in ``target`` (H, W[, 3]) using the cached reference memory."""
        memory = self._memory_dict()
        tensor, shape = self._prep(target)
        return self._readout(self._target_logits(self._encode(tensor), memory, len(self._refs)), shape)

    def segment_many(self, targets: Iterable[np.ndarray], progress: Callable[[int, int], Any] | None = None,
                     cancel: Callable[[], bool] | None = None) -> Iterator[FewShotResult]:
        """Yield one :class:`FewShotResult` per target (generator; ``list(...)`` for a list).

        ``progress(done, total)`` is called after each target (total -1 when unknown); ``cancel()`` returning
        True stops before the next target. The reference memory is built once for all targets.
        """
        total = len(targets) if hasattr(targets, "__len__") else -1
        self._memory_dict()
        for i, target in enumerate(targets):
            if cancel is not None and cancel():
                return
            result = self.segment(target)
            if progress is not None:
                progress(i + 1, total)
            yield result

    @torch.inference_mode()
    def segment_episode_reference(self, target: np.ndarray, batch_backbone: bool = False) -> FewShotResult:
        """Upstream's per-target episode: everything re-encoded (k references + this target), fresh memory.

        ``batch_backbone``: one encoder pass over all k + 1 frames, as upstream does (equal to the per-frame
        path up to float rounding of batched kernels); False encodes frame by frame, which matches
        :meth:`segment` bit for bit. Slow by design: kept for tests and the benchmark.
        """
        self._require_refs()
        self.model.eval()
        tensor, shape = self._prep(target)
        images = [r.image for r in self._refs] + [tensor]
        with self._amp():
            if batch_backbone:
                feats = encode_frames(self.sam, torch.cat(images))
            else:
                feats = [encode_frames(self.sam, im)[0] for im in images]
            k = len(self._refs)
            memory, _ = build_memory(self.sam, feats[:k], [r.prompt() for r in self._refs], k + 1)
        return self._readout(self._target_logits(feats[k], memory, k), shape)

    # --------------------------------------------------------------------------------------- multi-class
    def segment_classes(self, targets: Sequence[np.ndarray], reference_labels: Sequence[np.ndarray],
                        reference_images: Sequence[np.ndarray] | None = None,
                        progress: Callable[[int, int], Any] | None = None,
                        cancel: Callable[[], bool] | None = None, threshold: float = 0.5) -> list[np.ndarray]:
        """Multi-class: every label id > 0 in ``reference_labels`` is its own class (one SANSA pass each).

        ``reference_images``: the images the labels belong to (default: the images of the references added
        with :meth:`add_reference`, in order). Each reference and each target is encoded once and shared by
        all classes; a class's memory uses the references where it appears. Overlaps go to the class with the
        higher probability (pixels where no class passes ``threshold`` stay 0). Returns one (H, W) int32
        label image per target. :meth:`iter_segment_classes` is the generator form.
        """
        return list(self.iter_segment_classes(targets, reference_labels, reference_images, progress, cancel,
                                              threshold))

    def iter_segment_classes(self, targets: Iterable[np.ndarray], reference_labels: Sequence[np.ndarray],
                             reference_images: Sequence[np.ndarray] | None = None,
                             progress: Callable[[int, int], Any] | None = None,
                             cancel: Callable[[], bool] | None = None,
                             threshold: float = 0.5) -> Iterator[np.ndarray]:
        """Generator form of :meth:`segment_classes` (one label image per target, as soon as it is done)."""
        class_ids, memories = self._class_memories(reference_labels, reference_images)
        total = len(targets) if hasattr(targets, "__len__") else -1
        for n, target in enumerate(targets):
            if cancel is not None and cancel():
                return
            with torch.inference_mode():
                tensor, shape = self._prep(target)
                feats = self._encode(tensor)
                probs = np.stack([self._readout(self._target_logits(feats, mem, k), shape).probability
                                  for mem, k in memories])
            best = probs.argmax(0)
            ids = np.asarray(class_ids, np.int32)
            yield np.where(probs.max(0) > threshold, ids[best], 0).astype(np.int32)
            if progress is not None:
                progress(n + 1, total)

    @torch.inference_mode()
    def _class_memories(self, reference_labels, reference_images) -> tuple[list[int], list[tuple[dict, int]]]:
        if reference_images is None:
            self._require_refs()
            if len(reference_labels) != len(self._refs):
                raise FewShotError(f"{len(reference_labels)} label images for {len(self._refs)} references: "
                                   f"give one label image per added reference, or pass reference_images=.")
            ref_tensors = [(r.image, r.shape) for r in self._refs]
        else:
            if len(reference_images) != len(reference_labels):
                raise FewShotError("reference_images and reference_labels must have the same length.")
            if len(reference_images) == 0:
                raise FewShotError("no reference: give at least one labelled image.")
            ref_tensors = [self._prep(im) for im in reference_images]
        labels = [np.asarray(lab) for lab in reference_labels]
        for lab, (_, shape) in zip(labels, ref_tensors):
            if lab.shape != tuple(shape):
                raise FewShotError(f"label image shape {lab.shape} differs from its reference image's {tuple(shape)}.")
        class_ids = sorted(int(c) for c in np.unique(np.concatenate([lab.ravel() for lab in labels])) if c > 0)
        if not class_ids:
            raise FewShotError("the reference label images are empty: paint at least one class (label id > 0).")
        self.model.eval()
        ref_feats = [self._encode(t) for t, _ in ref_tensors]
        memories = []
        for c in class_ids:
            idx = [i for i, lab in enumerate(labels) if (lab == c).any()]
            prompts = [{"mask_inputs": preprocess_mask(labels[i] == c, self.model_size, self.device)} for i in idx]
            with self._amp():
                memory, _ = build_memory(self.sam, [ref_feats[i] for i in idx], prompts, len(idx) + 1)
            memories.append((memory, len(idx)))
        return class_ids, memories

    def __repr__(self) -> str:
        return (f"FewShotSegmenter({len(self._refs)} references, image_size={self.image_size}, "
                f"model_size={self.model_size}, device={self.device})")


# re-exported: callers catch bad images and bad requests alike
ImageShapeError = ImageShapeError

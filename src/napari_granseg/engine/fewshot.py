"""Few-shot segmentation with SANSA: label a few images, segment the same class in every other one.

The episode itself (frame roles on SAM 2's memory, memory banks for more than 7 references) lives in
:mod:`napari_granseg.engine.episode`, shared with the trainer; pixels and prompts become model input in
:mod:`napari_granseg.engine.fewshot_input` (the official SANSA steps for uint8 images).

Why a reusable memory: upstream re-encodes the references for every target (one episode per target). The
target never writes to the memory (``run_mem_encoder=False``), so the reference memory is built once here
and every target of a series runs against it: N targets cost N image encodings instead of N x (k + 1), with
the same outputs (the per-target path is ``granseg_training.sansa.episodes.segment_episode_reference``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from ..devices import autocast_dtype, check_precision, precision_context
from .episode import Features, build_memory, encode_frames, memory_banks, segment_with_banks
from .fewshot_input import FewShotError, preprocess_image, preprocess_mask, reference_prompt, upsample_logits
from .normalize import ImageShapeError, check_image, check_intensity
from .prompts import remote_hint
from .protocols import DEMO_PROMPT_NOTE

__all__ = ["FewShotSegmenter", "FewShotResult", "FewShotError", "Reference"]

log = logging.getLogger(__name__)


@dataclass
class FewShotResult:
    """mask: (H, W) bool at the target's size; logits: the model's low-res logits (h, w) float32 (256x256
    for 1024 px models); probability: sigmoid of the logits upsampled to (H, W), float32."""

    mask: np.ndarray
    logits: np.ndarray
    probability: np.ndarray


@dataclass
class Reference:
    """One prepared reference: model input (1, 3, S, S), the image's (H, W) and its sam2 prompt."""

    image: torch.Tensor
    shape: tuple[int, int]
    prompt: dict


def _check_image_size(image_size) -> int | None:
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise ValueError(f"image_size={image_size!r}: pass the square pre-resize in pixels (640 for natural "
                         f"images, 518 for FSS-1000 / medical data) or None to resize straight to the model size.")
    return int(image_size)


class FewShotSegmenter:
    """Segment, in target images, the class shown in a few references (SANSA).

    ``model``: a ``LoadedModel`` of kind "sansa" or a ``SansaModel``. ``image_size``: upstream's square
    pre-resize (640 for natural images, 518 for FSS-1000/medical; None to resize straight to the model's
    size). ``precision``: "fp32" computes what the official code computes (no autocast, even inside a
    caller's autocast), "bf16" autocasts every model call, "auto" picks bf16 where it is faster (see
    ``napari_granseg.devices``). ``intensity_range``: (lo, hi) for 16-bit and float data so that every image
    of a series is scaled alike (default: each image by its own 0.5-99.5 percentiles); uint8 images always
    take the official 8-bit path (``engine.fewshot_input``).

    Any number of references counts: beyond 7 (SAM 2's memory size) they are split into memory banks that
    share the first reference, and the banks' logits are averaged (``engine.episode``). ``banks=False`` runs
    the official episode instead, where the target reads the masks of the first reference and of the last 6
    (and the object pointers of all).

    It implements :class:`~napari_granseg.engine.protocols.FewShot`; on a GPU machine open it through
    ``napari_granseg.compute.open_fewshot(model, where=ADDRESS)`` (docs/remote.md).

    >>> fs = FewShotSegmenter(model); fs.add_reference(img0, mask=m0); res = fs.segment(img5)
    """

    def __init__(self, model: Any, image_size: int | None = 640, precision: str = "auto",
                 intensity_range: tuple[float, float] | None = None, scheduler=None, banks: bool = True):
        if scheduler is not None:
            raise TypeError(remote_hint("FewShotSegmenter", "open_fewshot", scheduler))
        module = getattr(model, "module", model)
        kind = getattr(model, "kind", "sansa")
        if kind != "sansa" or not hasattr(module, "sam"):
            raise TypeError(f"FewShotSegmenter needs a SANSA model (load_model('sansa-universal') or "
                            f"kind='sansa'), got {model!r}")
        self.loaded = model if module is not model else None
        self.model = module
        self.sam = module.sam
        self.image_size = _check_image_size(image_size)
        self.precision = check_precision(precision)
        autocast_dtype(self.device, self.precision)  # bf16 where the device has none: fail now, not later
        self.intensity_range = check_intensity(intensity_range, "intensity_range", strict=True)
        if not isinstance(banks, bool):
            raise TypeError(f"banks={banks!r}: pass True (every reference counts) or False (the official episode).")
        self.banks = banks
        self._refs: list[Reference] = []
        self._memory: dict | None = None

    # --------------------------------------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def model_size(self) -> int:
        return int(self.sam.image_size)

    @property
    def num_references(self) -> int:
        return len(self._refs)

    @property
    def references(self) -> list[Reference]:
        """The prepared references, in order (read-only use: the training package's per-target path)."""
        return list(self._refs)

    def precision_context(self):
        """The context every model call but the image encoder's runs in (``devices.precision_context``)."""
        return precision_context(self.device, self.precision)

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """(model input (1, 3, S, S), (H, W)) of one image (``engine.fewshot_input.preprocess_image``)."""
        image = check_image(image)
        with precision_context(self.device, "fp32"):  # input is float32 whatever autocast the caller runs
            tensor = preprocess_image(image, self.model_size, self.image_size, self.device, self.intensity_range)
        return tensor, tuple(image.shape[:2])

    def readout(self, low_res: torch.Tensor, shape: tuple[int, int]) -> FewShotResult:
        """Low-res logits (1, 1, h, w) -> :class:`FewShotResult` at ``shape`` (mask = sigmoid > 0.5)."""
        with precision_context(self.device, "fp32"):
            prob = torch.sigmoid(upsample_logits(low_res, shape, self.image_size))
        return FewShotResult(mask=(prob > 0.5).cpu().numpy(), logits=low_res[0, 0].float().cpu().numpy(),
                             probability=prob.cpu().numpy().astype(np.float32))

    def encode(self, tensor: torch.Tensor) -> Features:
        """Image features of one prepared image (the adapted encoder, under the precision setting)."""
        with precision_context(self.device, self.precision, "encoder"):
            return encode_frames(self.sam, tensor, self.precision)[0]

    def target_logits(self, features: Features, memory: dict) -> torch.Tensor:
        """Low-res logits of a target against a reference memory (every memory bank, fused)."""
        with self.precision_context():
            return segment_with_banks(self.sam, features, memory_banks(self.sam, memory, split=self.banks))

    # ----------------------------------------------------------------------------------------- references
    def add_reference(self, image: np.ndarray, mask: np.ndarray | None = None, points=None, box=None,
                      scribble=None) -> int:
        """Add one reference (image + mask, or points [[x, y], ...], box [x0, y0, x1, y1], scribble [[x, y],
        ...] in pixels). The first reference is the conditioning frame. Returns the number of references."""
        if mask is None and self.loaded is not None and self.loaded.is_demo and not self._refs:
            log.warning("few-shot: %s.", DEMO_PROMPT_NOTE)  # once per set of references
        tensor, shape = self.prepare(image)
        prompt = reference_prompt(shape, self.model_size, self.image_size, self.device, mask=mask, points=points,
                                  box=box, scribble=scribble)
        self._refs.append(Reference(tensor, shape, prompt))
        self._memory = None
        return len(self._refs)

    def clear_references(self) -> None:
        """Forget all references (and their memory)."""
        self._refs.clear()
        self._memory = None

    def require_references(self) -> None:
        if not self._refs:
            raise FewShotError("no reference added: call add_reference(image, mask=...) with at least one "
                               "labelled example of the class before segmenting.")

    @torch.inference_mode()
    def memory(self) -> dict:
        """SAM 2's memory of all references (built once, until the references change)."""
        self.require_references()
        if self._memory is None:
            self.model.eval()
            feats = [self.encode(r.image) for r in self._refs]
            with self.precision_context():
                self._memory, _ = build_memory(self.sam, feats, [r.prompt for r in self._refs], len(self._refs) + 1)
        return self._memory

    # -------------------------------------------------------------------------------------------- targets
    @torch.inference_mode()
    def segment(self, target: np.ndarray) -> FewShotResult:
        """Segment the references' class in ``target`` (H, W[, 3]) using the cached reference memory."""
        memory = self.memory()
        tensor, shape = self.prepare(target)
        return self.readout(self.target_logits(self.encode(tensor), memory), shape)

    def segment_many(self, targets: Iterable[np.ndarray], progress: Callable[[int, int], Any] | None = None,
                     cancel: Callable[[], bool] | None = None) -> Iterator[FewShotResult]:
        """Yield one :class:`FewShotResult` per target (generator; ``list(...)`` for a list).

        ``progress(done, total)`` is called after each target (total -1 when unknown); ``cancel()`` returning
        True stops before the next target. The reference memory is built once for all targets.
        """
        total = len(targets) if hasattr(targets, "__len__") else -1
        self.memory()
        for i, target in enumerate(targets):
            if cancel is not None and cancel():
                return
            result = self.segment(target)
            if progress is not None:
                progress(i + 1, total)
            yield result

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
        ids = np.asarray(class_ids, np.int32)
        for n, target in enumerate(targets):
            if cancel is not None and cancel():
                return
            with torch.inference_mode():
                tensor, shape = self.prepare(target)
                feats = self.encode(tensor)
                probs = np.stack([self.readout(self.target_logits(feats, mem), shape).probability
                                  for mem in memories])
            yield np.where(probs.max(0) > threshold, ids[probs.argmax(0)], 0).astype(np.int32)
            if progress is not None:
                progress(n + 1, total)

    @torch.inference_mode()
    def _class_memories(self, reference_labels, reference_images) -> tuple[list[int], list[dict]]:
        if reference_images is None:
            self.require_references()
            if len(reference_labels) != len(self._refs):
                raise FewShotError(f"{len(reference_labels)} label images for {len(self._refs)} references: "
                                   f"give one label image per added reference, or pass reference_images=.")
            ref_tensors = [(r.image, r.shape) for r in self._refs]
        else:
            if len(reference_images) != len(reference_labels):
                raise FewShotError("reference_images and reference_labels must have the same length.")
            if len(reference_images) == 0:
                raise FewShotError("no reference: give at least one labelled image.")
            ref_tensors = [self.prepare(im) for im in reference_images]
        labels = [np.asarray(lab) for lab in reference_labels]
        for lab, (_, shape) in zip(labels, ref_tensors):
            if lab.shape != tuple(shape):
                raise FewShotError(f"label image shape {lab.shape} differs from its reference image's {tuple(shape)}.")
        class_ids = sorted(int(c) for c in np.unique(np.concatenate([lab.ravel() for lab in labels])) if c > 0)
        if not class_ids:
            raise FewShotError("the reference label images are empty: paint at least one class (label id > 0).")
        self.model.eval()
        ref_feats = [self.encode(t) for t, _ in ref_tensors]
        memories = []
        for c in class_ids:
            idx = [i for i, lab in enumerate(labels) if (lab == c).any()]
            prompts = [{"mask_inputs": preprocess_mask(labels[i] == c, self.model_size, self.device, self.image_size)}
                       for i in idx]
            with self.precision_context():
                memory, _ = build_memory(self.sam, [ref_feats[i] for i in idx], prompts, len(idx) + 1)
            memories.append(memory)
        return class_ids, memories

    def __repr__(self) -> str:
        return (f"FewShotSegmenter({len(self._refs)} references, image_size={self.image_size}, "
                f"model_size={self.model_size}, precision={self.precision!r}, device={self.device})")


# re-exported: callers catch bad images and bad requests alike
ImageShapeError = ImageShapeError

"""What every backend of the two methods implements: the local engines and their stand-ins on a GPU worker.

Why protocols: the widgets, the API and the job bodies call a predictor without knowing where it runs
(:class:`~napari_granseg.engine.interactive.GranularityPredictor` here, ``remote.client``'s proxies on a dask
worker, :class:`~napari_granseg.engine.tiling.TiledPredictor` around either). Code asks
``isinstance(obj, Predictor)`` (in tests and at seams: on Python 3.11 it reads every attribute, which for a
remote predictor asks the worker once) or simply relies on these names; it never probes with ``hasattr``.
:func:`napari_granseg.compute.open_predictor` and :func:`~napari_granseg.compute.open_fewshot` return them.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = ["Predictor", "FewShot", "Intensity", "Progress", "Cancel", "DEMO_PROMPT_NOTE"]

#: a (low, high) grey range an image is scaled with (a stack's, for a slice of a stack)
Intensity = tuple[float, float]
#: ``progress(done, total)`` (total -1 or 0 when unknown)
Progress = Callable[[int, int], Any]
#: ``cancel()`` -> True to stop at the next check
Cancel = Callable[[], bool]


@runtime_checkable
class Predictor(Protocol):
    """Clicks (+ granularity) -> masks on one image at a time (UnSAMv2, or stock SAM 2 without granularity).

    ``lock`` is held by ``set_image`` and ``predict``; hold it yourself around a ``set_image`` + ``predict``
    pair when several threads (console, widget worker, batch) share the predictor.
    """

    #: "auto" | "fp32" | "bf16" (``napari_granseg.devices.PRECISIONS``)
    precision: str
    #: a re-entrant lock (``threading.RLock``) shared by every caller of this predictor
    lock: Any

    @property
    def image_size(self) -> int:
        """The model's square input in pixels (1024 for the released models, 256 for the demo)."""

    @property
    def has_granularity(self) -> bool:
        """True for UnSAMv2 models (predict takes ``granularity``); False for stock SAM 2."""

    @property
    def mask_threshold(self) -> float:
        """Logit threshold of the binary masks ``predict`` returns."""

    def set_image(self, image: np.ndarray, intensity: Intensity | None = None) -> None:
        """Embed ``image`` (H, W) or (H, W, 3), scaled with ``intensity`` (None: the image's own range)."""

    def is_cached(self, image: np.ndarray, intensity: Intensity | None = None) -> bool:
        """Whether ``set_image(image, intensity)`` would skip the image encoder (a preview needs no wait)."""

    def predict(self, point_coords=None, point_labels=None, granularity: float | Sequence[float] | None = None,
                multimask_output: bool = False, mask_input=None, return_logits: bool = False, box=None,
                refine: bool = False, normalize_coords: bool = True) -> tuple[np.ndarray, np.ndarray, Any]:
        """(masks (N, H, W) bool or float logits, ious (N,), low-res logits (N, h, w) or None)."""


#: What a person should hear when the bundled demo few-shot model gets a click, box or stroke as a reference: it
#: was trained with label references only and from one object's prompt often segments the other class as well
#: (docs/status.md has the numbers). Said by the engine's ``add_reference`` and the few-shot widget.
DEMO_PROMPT_NOTE = ("the demo model reads Labels references, not clicks, boxes or strokes (from one object's "
                    "prompt it often takes the other class too): paint a few objects of the class in a Labels "
                    "layer and pick it as the reference")


@runtime_checkable
class FewShot(Protocol):
    """SANSA few-shot: references of a class once, then that class segmented in many targets.

    ``segment`` returns an ``engine.fewshot.FewShotResult`` (mask, logits, probability).
    """

    #: upstream's square pre-resize in pixels (640, 518) or None (straight to the model's size)
    image_size: int | None
    precision: str

    @property
    def num_references(self) -> int:
        """How many references were added since the last :meth:`clear_references`."""

    def add_reference(self, image: np.ndarray, mask: np.ndarray | None = None, points=None, box=None,
                      scribble=None) -> int:
        """Add one reference (mask, points, box or scribble in pixels); returns the number of references."""

    def clear_references(self) -> None:
        """Forget every reference (and the memory built from them)."""

    def segment(self, target: np.ndarray) -> Any:
        """The references' class in ``target``: a ``FewShotResult``."""

    def segment_many(self, targets: Iterable[np.ndarray], progress: Progress | None = None,
                     cancel: Cancel | None = None) -> Iterator[Any]:
        """One ``FewShotResult`` per target (a generator), progress after each, cancel between targets."""

    def segment_classes(self, targets: Sequence[np.ndarray], reference_labels: Sequence[np.ndarray],
                        reference_images: Sequence[np.ndarray] | None = None, progress: Progress | None = None,
                        cancel: Cancel | None = None, threshold: float = 0.5) -> list[np.ndarray]:
        """Multi-class: one (H, W) int32 label image per target, every label id of the references a class."""

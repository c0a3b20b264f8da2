"""The per-item step of every batch run, as it runs in a worker process.

A worker gets a :class:`~napari_granseg.batch.job.Job` and an :class:`~napari_granseg.batch.inputs.Item`,
loads the model itself once per process (:func:`worker_model`), reads its input, segments it through the
same public engines the napari console uses (``gs.segment``, ``gs.segment_everything``,
``FewShotSegmenter.segment_classes``), writes the result atomically and returns a small status dict. It
never raises for a bad item, so one corrupt file does not stop a run of thousands.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..io import LabelsZarr, read_image, write_labels_tiff
from ..engine.source import needs_channel_choice
from .inputs import Item, is_stack_shape, read_slice
from .job import Job, ModelRef, reference_pairs
from .outputs import DISK_ERRNOS, OutputRefusedError, disk_error_line, foreign_output, refusal_message
from .prompts import Prompt, objects_as_clicks

__all__ = ["channels_needed_message", "worker_model", "preload", "segment_image", "segment_with_prompts", "process_item", "process_slice"]

_lock = threading.Lock()
_FEWSHOT: dict[tuple, "_ClassStream"] = {}


def worker_model(ref: ModelRef):
    """The model of ``ref`` in this process, loaded once (one model per worker process: ``zoo.cached_model``)."""
    from ..model_store import cached_model

    return cached_model(ref)


# ------------------------------------------------------------------------------------------------ engines
def segment_with_prompts(image: np.ndarray, prompts: Sequence[Prompt], model=None, granularity: float = 0.5,
                         **engine_options) -> np.ndarray:
    """Label image from clicks through :func:`napari_granseg.segment`, with the prompt file's object ids.

    One positive point per object: exactly ``gs.segment`` (ids renumbered to the file's object ids).
    Points sharing an object id: the union of their masks under that id. Negative points cut every object.
    ``engine_options``: ``precision`` / ``intensity`` / ``channels`` / ``scale`` ... passed on to ``gs.segment``.
    """
    from ..api import segment

    image = np.asarray(image)
    points, labels, grans, ids = objects_as_clicks(prompts, granularity)
    out = np.zeros(_plane_shape(image, engine_options), np.int32)
    if not ids:
        return out
    h, w = out.shape
    for (row, col) in points:
        if not (0 <= row < h and 0 <= col < w):
            raise ValueError(f"click (row {row}, col {col}) is outside the image of {h} x {w} pixels: check the "
                             f"prompt file's row/col (pixels, napari order) and that it names the right image")
    labels_by_click = segment(image, points=points, granularity=grans, model=model, labels=labels,
                              **engine_options)
    lut = np.zeros(len(ids) + 1, np.int32)
    lut[1:] = ids
    return lut[labels_by_click]


def channels_needed_message(path, shape) -> str:
    """The one line for a multi-channel image without a channel choice."""
    return (f"{Path(path).name} has {shape[-1]} channels (shape {tuple(shape)}): pass --channels K for the channel "
            f"the model sees or --channels A,B for a composite (Job(channels=...))")


def _plane_shape(image: np.ndarray, options: dict) -> tuple[int, int]:
    """(H, W) of the plane the model sees (the image plan's, with the job's channel choice)."""
    from ..engine.source import ImagePlan

    return ImagePlan.from_array(image, channels=options.get("channels"),
                                channel_axis=options.get("channel_axis")).plane_shape


def _channel_view(image: np.ndarray, job: Job) -> np.ndarray:
    """The image few-shot sees: ``job.channels`` selected (every reference and target alike)."""
    if not job.has_channel_choice:
        return image
    from ..engine.source import ImagePlan

    return ImagePlan.from_array(image, channels=job.channels, channel_axis=job.channel_axis).plane()


class _ClassStream:
    """One ``FewShotSegmenter`` and its multi-class reference memory, built once per process, fed one target
    at a time (the generator form of ``segment_classes``: references and their class memories are encoded
    once and shared by every class and every target)."""

    def __init__(self, model, job: Job):
        from ..engine.fewshot import FewShotSegmenter

        pairs = reference_pairs(job.references, job.reference_labels)
        images = [_channel_view(read_image(a), job) for a, _ in pairs]
        labels = [_label_plane(read_image(b)) for _, b in pairs]
        if not any((lab > 0).any() for lab in labels):
            raise ValueError("the reference label images are all background (0): label at least one object")
        self.segmenter = FewShotSegmenter(model, image_size=job.image_size, **job.engine_options())
        self._references = (labels, images)
        self._job = job
        self._next: np.ndarray | None = None
        self._stream = self._start()

    def _start(self) -> Iterator[np.ndarray]:
        labels, images = self._references
        return self.segmenter.iter_segment_classes(self._targets(), labels, reference_images=images)

    def _targets(self) -> Iterator[np.ndarray]:
        while True:
            yield self._next

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from ..engine.normalize import check_image

        self._next = check_image(_channel_view(image, self._job))
        try:
            return next(self._stream)
        except Exception:
            self._stream = self._start()  # a generator that raised is finished: the next target gets a new one
            raise


def _label_plane(labels: np.ndarray) -> np.ndarray:
    return labels if labels.ndim == 2 else labels[..., 0]


def _fewshot_for(job: Job, model) -> _ClassStream:
    key = (id(model), str(job.references), str(job.reference_labels), int(job.image_size), job.precision,
           str(job.channels), job.channel_axis)
    with _lock:
        if key not in _FEWSHOT:
            _FEWSHOT[key] = _ClassStream(model, job)
        return _FEWSHOT[key]


def segment_image(image: np.ndarray, job: Job, prompts: Sequence[Prompt] = (), model=None,
                  intensity: tuple[float, float] | None = None) -> np.ndarray:
    """Segment one in-memory image as ``job`` says (the per-item step of every batch run).

    intensity: the stack's shared (lo, hi) range for a slice of a stack; None: the image's own range.
    """
    model = model if model is not None else worker_model(job.model.resolved(job.mode))
    options = job.engine_options()
    if job.mode != "fewshot":
        options.update(job.image_options())
    if intensity is not None:
        options["intensity"] = intensity
    if job.mode == "whole":
        from ..api import segment_everything

        return np.asarray(segment_everything(image, granularity=job.granularity, model=model, **options,
                                             **job.settings))
    if job.mode == "prompts":
        return segment_with_prompts(image, prompts, model=model, granularity=job.granularity, **options)
    stream = _fewshot_for(job, model)
    with _lock:  # the stream holds one target at a time
        return stream(image)


# ------------------------------------------------------------------------------------------------ per process
def preload(job: Job, model=None):
    """Load this process's model (and few-shot reference memory) for ``job``; returns the model.

    Run on every worker before the tasks (``client.run``), so a missing checkpoint is reported once with the
    zoo's message instead of failing every item."""
    set_threads(job)
    model = model if model is not None else worker_model(job.model.resolved(job.mode))
    if job.mode == "fewshot":
        _fewshot_for(job, model)
    return model


def preload_worker(job: Job) -> int:
    """``client.run`` target: load the worker's model, return only its pid (never the model)."""
    preload(job)
    return os.getpid()


def set_threads(job: Job) -> None:
    if job.torch_threads:
        import torch

        if torch.get_num_threads() != job.torch_threads:
            torch.set_num_threads(int(job.torch_threads))


# ------------------------------------------------------------------------------------------------ items
def _n_labels(labels: np.ndarray) -> int:
    return int(len(np.unique(labels)) - (labels == 0).any())


def _failure(status: dict, err: Exception, t0: float) -> dict[str, Any]:
    result = {**status, "status": "failed", "error": f"{type(err).__name__}: {err}",
              "seconds": time.perf_counter() - t0}
    if isinstance(err, OutputRefusedError):
        result.update(status="refused", error=str(err))
    elif isinstance(err, OSError) and err.errno in DISK_ERRNOS:
        result.update(error=disk_error_line(err, Path(status["output"]).parent), disk_errno=err.errno)
    return result


def process_item(item: Item, job: Job, model=None) -> dict[str, Any]:
    """Segment one image file and write its label TIFF atomically. Never raises for a bad item: it returns
    ``{"status": "failed" | "refused", "error": ...}``."""
    t0 = time.perf_counter()
    status = {"input": item.input, "output": item.output, "index": item.index, "pid": os.getpid()}
    try:
        set_threads(job)
        image = read_image(item.input)
        if not job.has_channel_choice and needs_channel_choice(image.shape):
            raise ValueError(channels_needed_message(item.input, image.shape))
        if is_stack_shape(image.shape, channels_chosen=job.has_channel_choice):
            raise ValueError(f"{item.input} is a stack of shape {image.shape}, not one image: segment it with "
                             f"run_stack / `granseg segment {item.input} --zarr OUT.zarr`")
        labels = segment_image(image, job, item.prompts, model=model)
        if foreign_output(item.output, job.replace_foreign):  # it may have appeared while we computed
            raise OutputRefusedError(refusal_message(item.output))
        meta = {"granseg_fingerprint": item.fingerprint, "source": Path(item.input).name, "mode": job.mode,
                "granularity": float(job.granularity), "precision": job.precision,
                "model": str(job.model.name or job.model.kind)}
        write_labels_tiff(item.output, labels, meta)
        return {**status, "status": "done", "n_labels": _n_labels(labels), "seconds": time.perf_counter() - t0}
    except Exception as err:  # recorded, the run goes on
        return _failure(status, err, t0)


def process_slice(item: Item, job: Job, model=None) -> dict[str, Any]:
    """Segment slice ``item.index`` of the stack ``item.input`` and write it into the zarr ``item.output``.

    Only this slice is read (out-of-core); it is scaled with the stack's shared range ``item.intensity``."""
    t0 = time.perf_counter()
    status = {"input": item.input, "output": item.output, "index": item.index, "pid": os.getpid()}
    try:
        set_threads(job)
        store = LabelsZarr.open(item.output)
        image = read_slice(item.input, item.index)
        labels = segment_image(image, job, item.prompts, model=model, intensity=item.intensity)
        store.write(item.index, labels)
        return {**status, "status": "done", "n_labels": _n_labels(labels), "seconds": time.perf_counter() - t0}
    except Exception as err:
        return _failure(status, err, t0)

"""The classes that live on the GPU worker as dask actors, holding the model, the predictor and the images.

An actor keeps state between calls (the model, the image embedding, the few-shot memory), so an interactive
call costs one direct worker round trip (1-2 ms on a LAN plus compute) instead of a scheduled task. Rules
every method follows, because dask actors break otherwise:

- replies are numpy arrays, bytes or plain Python (:mod:`.wire`), never torch tensors;
- state is read through methods (attributes set in ``__init__`` are not readable through the handle);
- ordinary methods run one at a time in the worker's single actor thread, so long jobs report progress and
  read a cancel flag through ``async`` methods, which run on the worker's event loop while the job runs;
- the model is loaded here by name or path (the worker's own zoo and cache), never sent.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import numpy as np

from ..client.wire import Missing, Packed, pack_array, pack_mask, unpack_array

__all__ = ["GranularityActor", "FewShotActor"]

#: images (and stacks) kept per actor, newest first out; the newest one always stays
MAX_IMAGES = 4
MAX_IMAGE_BYTES = 4 * 2**30


class _ActorBase:
    """Model loading, the image store and job progress/cancel shared by both actors."""

    mode = "whole"

    def __init__(self, model: dict, torch_threads: int | None = None):
        from ...model_store import ModelRef, cached_model

        if torch_threads:
            import torch

            torch.set_num_threads(int(torch_threads))
        self._ref = ModelRef(**model).resolved(self.mode)
        self._loaded = cached_model(self._ref)
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._progress: dict[str, tuple[int, int]] = {}
        self._cancelled: set[str] = set()

    # ------------------------------------------------------------------------------------ images
    def _image(self, key: str, payload: Packed | None) -> np.ndarray | None:
        """The image of ``key``: unpacked from ``payload`` and kept, or from the store (None: not held)."""
        if payload is not None:
            image = unpack_array(payload)
            self._images[key] = image
            while len(self._images) > 1 and (len(self._images) > MAX_IMAGES or
                                             sum(a.nbytes for a in self._images.values()) > MAX_IMAGE_BYTES):
                self._images.popitem(last=False)
        image = self._images.get(key)
        if image is not None:
            self._images.move_to_end(key)
        return image

    def held_images(self) -> list[str]:
        """Keys of the images this actor holds (oldest first)."""
        return list(self._images)

    def info(self) -> dict:
        """What the client shows: model name, kind, demo or not, device, and this worker's process id."""
        import os

        import torch

        lm = self._loaded
        return {"name": lm.name, "kind": lm.kind, "is_demo": bool(lm.is_demo), "device": str(lm.device),
                "checkpoint": None if lm.checkpoint is None else str(lm.checkpoint), "pid": os.getpid(),
                "torch_threads": torch.get_num_threads()}

    # --------------------------------------------------------------------------------------- jobs
    async def progress(self, job: str) -> tuple[int, int]:
        """(done, total) of a running job; runs on the event loop, so it answers while the job computes."""
        return self._progress.get(job, (0, 0))

    async def cancel(self, job: str) -> None:
        """Ask job ``job`` to stop at its next check (between decoder batches, frames or targets)."""
        self._cancelled.add(job)

    def _job_callbacks(self, job: str):
        def progress(done, total):
            self._progress[job] = (int(done), int(total))

        def cancel() -> bool:
            return job in self._cancelled

        return progress, cancel

    def _end_job(self, job: str) -> None:
        self._progress.pop(job, None)
        self._cancelled.discard(job)


class GranularityActor(_ActorBase):
    """UnSAMv2 on the worker: an interactive predictor, ``gs.segment``, segment everything, propagation."""

    def __init__(self, model: dict, predictor_kwargs: dict | None = None, torch_threads: int | None = None):
        super().__init__(model, torch_threads)
        from ...engine.interactive import GranularityPredictor

        self._predictor = GranularityPredictor(self._loaded, **(predictor_kwargs or {}))

    def predictor_info(self) -> dict:
        pred = self._predictor
        return {**self.info(), "has_granularity": bool(pred.has_granularity),
                "mask_threshold": float(pred.mask_threshold), "image_size": int(pred.image_size),
                "precision": str(pred.precision)}

    def is_cached(self, key: str, intensity: Any) -> bool:
        """Whether ``set_image`` of the image held under ``key`` would skip the encoder (False: not held)."""
        image = self._images.get(key)
        return image is not None and bool(self._predictor.is_cached(image, intensity))

    def set_image(self, key: str, payload: Packed | None, kwargs: dict) -> dict:
        image = self._image(key, payload)
        if image is None:
            return Missing(key=key)
        self._predictor.set_image(image, **kwargs)
        return {"hw": tuple(int(s) for s in image.shape[:2])}

    def predict(self, kwargs: dict, low_res: bool = True) -> dict:
        """``GranularityPredictor.predict(**kwargs)`` with masks packed as bits (logits exactly, as float32)."""
        t0 = time.perf_counter()
        masks, ious, low = self._predictor.predict(**kwargs)
        t1 = time.perf_counter()
        masks = np.asarray(masks)
        packed = pack_array(masks.astype(np.float32, copy=False)) if kwargs.get("return_logits") else pack_mask(masks)
        return {"masks": packed, "ious": np.asarray(ious, np.float32),
                "low_res": pack_array(np.asarray(low, np.float32)) if low_res else None,
                "predict_s": t1 - t0, "pack_s": time.perf_counter() - t1}

    def segment(self, key: str, payload: Packed | None, points: list, granularity: Any, labels: Any,
                kwargs: dict) -> dict:
        """``gs.segment`` itself, on this worker's model (same labels as on the laptop)."""
        from ...api import segment

        image = self._image(key, payload)
        if image is None:
            return Missing(key=key)
        out = segment(image, points=points, granularity=granularity, model=self._loaded, labels=labels, **kwargs)
        return {"labels": pack_array(out)}

    def segment_everything(self, job: str, key: str, payload: Packed | None, granularity: Any,
                           settings: dict, stack: bool = False) -> dict:
        """``gs.segment_everything`` (or the engine's stack form) with progress and cancel for the client."""
        from ...api import get_predictor, segment_everything
        from ...engine.automatic import segment_everything_stack

        image = self._image(key, payload)
        if image is None:
            return Missing(key=key)
        progress, cancel = self._job_callbacks(job)
        try:
            if stack:  # precision= chooses the predictor (as in gs.segment_everything); the rest are settings
                settings = dict(settings)
                chosen = {k: settings.pop(k) for k in ("precision",) if k in settings}
                out = segment_everything_stack(get_predictor(self._loaded, **chosen), image, granularity, progress,
                                               cancel, **settings)
                return {"labels": pack_array(out)}
            out = segment_everything(image, granularity, model=self._loaded, progress=progress, cancel=cancel,
                                     **settings)
            if isinstance(out, tuple):  # return_info=True
                return {"labels": pack_array(out[0]), "info": out[1]}
            return {"labels": pack_array(out)}
        finally:
            self._end_job(job)

    def propagate(self, job: str, key: str, payload: Packed | None, prompts: list[dict], granularity: Any,
                  kwargs: dict) -> dict:
        """``gs.propagate`` through the stack held under ``key``; prompts are ObjectPrompt fields."""
        from ...engine.propagate import ObjectPrompt, propagate

        stack = self._image(key, payload)
        if stack is None:
            return Missing(key=key)
        objs = [ObjectPrompt(**{**p, "mask": None if p.get("mask") is None else unpack_array(p["mask"])})
                for p in prompts]
        progress, cancel = self._job_callbacks(job)
        try:
            out = propagate(self._loaded, stack, objs, granularity=granularity, progress=progress, cancel=cancel,
                            **kwargs)
        finally:
            self._end_job(job)
        return {"labels": pack_array(out)}


def _result_dict(result, with_probability: bool) -> dict:
    return {"mask": pack_mask(result.mask), "logits": pack_array(np.asarray(result.logits, np.float32)),
            "probability": pack_array(result.probability) if with_probability else None}


class FewShotActor(_ActorBase):
    """SANSA few-shot on the worker: the references' memory stays here, targets come and labels go back."""

    mode = "fewshot"

    def __init__(self, model: dict, image_size: int | None = 640, segmenter_kwargs: dict | None = None,
                 torch_threads: int | None = None):
        super().__init__(model, torch_threads)
        from ...engine.fewshot import FewShotSegmenter

        self._fs = FewShotSegmenter(self._loaded, image_size=image_size, **(segmenter_kwargs or {}))

    def add_reference(self, key: str, payload: Packed | None, mask: Packed | None, points, box, scribble) -> Any:
        image = self._image(key, payload)
        if image is None:
            return Missing(key=key)
        return self._fs.add_reference(image, mask=None if mask is None else unpack_array(mask), points=points,
                                      box=box, scribble=scribble)

    def clear_references(self) -> None:
        self._fs.clear_references()

    def num_references(self) -> int:
        return self._fs.num_references

    def segment(self, key: str, payload: Packed | None, with_probability: bool = True) -> dict:
        image = self._image(key, payload)
        if image is None:
            return Missing(key=key)
        return _result_dict(self._fs.segment(image), with_probability)

    def segment_classes(self, job: str, targets: list[Packed], reference_labels: list[Packed],
                        reference_images: list[Packed] | None, threshold: float) -> list[Packed]:
        """``FewShotSegmenter.segment_classes`` (the references' class memories are built once, here); a
        cancelled job returns the label images finished before the cancel, as the local method does."""
        progress, cancel = self._job_callbacks(job)
        try:
            out = self._fs.segment_classes(
                [unpack_array(t) for t in targets], [unpack_array(p) for p in reference_labels],
                None if reference_images is None else [unpack_array(p) for p in reference_images],
                progress, cancel, threshold)
        finally:
            self._end_job(job)
        return [pack_array(lab) for lab in out]

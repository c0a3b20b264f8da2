"""Stand-ins on this machine for the engines running on the GPU worker: same calls, same results.

:class:`RemotePredictor` answers like ``GranularityPredictor`` and :class:`RemoteFewShotSegmenter` like
``FewShotSegmenter``. Each holds one actor; when the worker or the link was lost, the call raises
:class:`~.calls.RemoteError` and the next call starts a fresh actor (the model loads again) and replays the
current image or the references, so work resumes once the worker is back.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, is_dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .calls import ActorClass, ActorHandle
from .wire import image_digest, pack_array, pack_mask, unpack_array

__all__ = ["RemotePredictor", "RemoteFewShotSegmenter"]

#: the worker's classes, by name (this half never imports the server half: see ``calls.ActorClass``)
GRANULARITY_ACTOR = ActorClass("napari_granseg.remote.server.actors:GranularityActor")
FEWSHOT_ACTOR = ActorClass("napari_granseg.remote.server.actors:FewShotActor")


def _plain(value: Any) -> Any:
    """Prompts as numpy or plain Python (never torch tensors, never views of large arrays)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return np.array(value)


class _Remote:
    """The actor of a proxy, created on first use and again after a lost connection."""

    def __init__(self, session, actor_cls: ActorClass, args: tuple, info_method: str = "info"):
        self.session = session
        self.lock = threading.RLock()
        self._actor_cls = actor_cls
        self._info_method = info_method
        self._args = args
        self._handle: ActorHandle | None = None
        self._info: dict | None = None
        self.stats = {"calls": 0, "images_sent": 0, "image_bytes_sent": 0, "reply_bytes": 0}

    def _fresh(self) -> None:
        """Replay state on a new actor (subclasses)."""

    def drop_if_worker_gone(self) -> None:
        """Forget the actor when its worker has left the cluster since the last call, so the next call loads
        the model on a live worker instead of failing on a worker that died while nothing was asked of it."""
        with self.lock:
            handle = self._handle
            if handle is not None and not handle.dead \
                    and handle.worker not in self.session.client.scheduler_info()["workers"]:
                handle.dead = True

    @property
    def handle(self) -> ActorHandle:
        with self.lock:
            if self._handle is None or self._handle.dead:
                self._handle = ActorHandle(self.session, self._actor_cls, *self._args)
                self._handle.stats = self.stats  # one running tally across reconnections
                self._info = None
                self._fresh()
            return self._handle

    def info(self) -> dict:
        """Model name, kind, whether it is the demo, device and worker pid (ask once per actor)."""
        with self.lock:
            handle = self.handle
            if self._info is None:
                self._info = handle.call(self._info_method)
            return self._info

    @property
    def is_demo(self) -> bool:
        return bool(self.info()["is_demo"])


class RemotePredictor(_Remote):
    """``GranularityPredictor`` on the worker. Thread-safe: calls hold ``lock`` (take it around a
    ``set_image`` + ``predict`` pair when several threads share the predictor, as with the local one)."""

    def __init__(self, session, model: dict, predictor_kwargs: dict, torch_threads: int | None = None):
        super().__init__(session, GRANULARITY_ACTOR, (model, dict(predictor_kwargs), torch_threads), "predictor_info")
        self._current: tuple[np.ndarray, str, dict] | None = None
        #: seconds the last predict spent computing and packing on the worker (the rest is transport)
        self.last_timing: dict[str, float] = {}

    def _fresh(self) -> None:
        if self._current is not None:
            image, key, kwargs = self._current
            self._handle.call_with_image("set_image", image, kwargs, key=key)

    @property
    def has_granularity(self) -> bool:
        return bool(self.info()["has_granularity"])

    @property
    def mask_threshold(self) -> float:
        return float(self.info()["mask_threshold"])

    @property
    def image_size(self) -> int:
        return int(self.info()["image_size"])

    @property
    def precision(self) -> str:
        return str(self.info()["precision"])

    def is_cached(self, image: np.ndarray, intensity=None) -> bool:
        """Whether the worker would skip the encoder for ``set_image(image, intensity)`` (one small call; an
        image the worker was never sent is not cached)."""
        key = image_digest(np.asarray(image))
        with self.lock:
            handle = self.handle
            if key not in handle._sent:
                return False
            return bool(handle.call("is_cached", key, None if intensity is None else tuple(intensity)))

    def set_image(self, image: np.ndarray, intensity=None, **kwargs) -> None:
        """Embed ``image`` on the worker. The pixels travel once (compressed); the same pixels again send
        only their key. ``intensity`` and ``kwargs`` go to the worker's ``set_image``."""
        image = np.asarray(image)
        key = image_digest(image)
        if intensity is not None:
            kwargs["intensity"] = tuple(float(v) for v in intensity)
        with self.lock:
            self._current = None
            self.handle.call_with_image("set_image", image, kwargs, key=key)
            self._current = (image, key, dict(kwargs))

    def predict(self, point_coords=None, point_labels=None, granularity: float | Sequence[float] | None = None,
                multimask_output: bool = False, mask_input=None, return_logits: bool = False, box=None,
                refine: bool = False, normalize_coords: bool = True, *, low_res: bool = True, **kwargs):
        """As ``GranularityPredictor.predict``: (masks (N, H, W) bool or float32 logits, ious (N,),
        low_res_logits (N, h, w)). Masks arrive as packed bits, exact. ``low_res=False`` skips the low-res
        logits (third value None): the slider needs only the masks, and that reply is ~100x smaller."""
        call = {"point_coords": _plain(point_coords), "point_labels": _plain(point_labels),
                "granularity": _plain(granularity), "multimask_output": bool(multimask_output),
                "mask_input": None if mask_input is None else np.asarray(mask_input, np.float32),
                "return_logits": bool(return_logits), "box": _plain(box), "refine": bool(refine),
                "normalize_coords": bool(normalize_coords), **kwargs}
        with self.lock:
            reply = self.handle.call("predict", call, bool(low_res))
        self.last_timing = {"predict_s": reply["predict_s"], "pack_s": reply["pack_s"]}
        low = None if reply["low_res"] is None else unpack_array(reply["low_res"])
        return unpack_array(reply["masks"]), reply["ious"], low

    # three-line calls and stack jobs (the session's methods end here)
    def segment(self, image: np.ndarray, points, granularity: Any = 0.5, labels=None, **kwargs) -> np.ndarray:
        with self.lock:
            reply = self.handle.call_with_image("segment", image, _plain(points), _plain(granularity),
                                                _plain(labels), kwargs)
        return unpack_array(reply["labels"])

    def _job(self, method: str, image: np.ndarray, *args, progress=None, cancel=None) -> dict:
        with self.lock:
            handle = self.handle
            return handle.call_with_image(method, image, *args, job=handle.new_job(), progress=progress,
                                          cancel=cancel)

    def segment_everything(self, image: np.ndarray, granularity=0.5, progress: Callable | None = None,
                           cancel: Any = None, **settings):
        reply = self._job("segment_everything", image, _plain(granularity), settings, False,
                          progress=progress, cancel=cancel)
        labels = unpack_array(reply["labels"])
        return (labels, reply["info"]) if "info" in reply else labels

    def segment_everything_stack(self, stack: np.ndarray, granularity=0.5, progress: Callable | None = None,
                                 cancel: Any = None, **settings) -> np.ndarray:
        reply = self._job("segment_everything", stack, _plain(granularity), settings, True,
                          progress=progress, cancel=cancel)
        return unpack_array(reply["labels"])

    def propagate(self, stack: np.ndarray, prompts, granularity=None, progress: Callable | None = None,
                  cancel: Any = None, **kwargs) -> np.ndarray:
        prompts = [prompts] if is_dataclass(prompts) else list(prompts)
        plain = []
        for p in prompts:
            fields = asdict(p) if is_dataclass(p) else dict(p)
            fields["mask"] = None if fields.get("mask") is None else pack_mask(fields["mask"])
            plain.append({k: (v if k == "mask" else _plain(v)) for k, v in fields.items()})
        reply = self._job("propagate", stack, plain, _plain(granularity), kwargs, progress=progress, cancel=cancel)
        return unpack_array(reply["labels"])

    def __repr__(self) -> str:
        return f"RemotePredictor(on {self.session.address})"


class RemoteFewShotSegmenter(_Remote):
    """``FewShotSegmenter`` on the worker: references and their memory stay there, results come back exact
    (mask as bits, logits and probability as float32). Results are ``engine.fewshot.FewShotResult``."""

    def __init__(self, session, model: dict, image_size: int | None, segmenter_kwargs: dict,
                 torch_threads: int | None = None):
        super().__init__(session, FEWSHOT_ACTOR, (model, image_size, dict(segmenter_kwargs), torch_threads))
        self.image_size = image_size
        self.precision = str(segmenter_kwargs.get("precision", "auto"))
        self._refs: list[tuple] = []

    def _fresh(self) -> None:
        for image, mask, points, box, scribble in self._refs:
            self._handle.call_with_image("add_reference", image, mask, points, box, scribble)

    @property
    def num_references(self) -> int:
        return len(self._refs)

    def add_reference(self, image: np.ndarray, mask: np.ndarray | None = None, points=None, box=None,
                      scribble=None) -> int:
        """As ``FewShotSegmenter.add_reference`` (the image travels once; the mask as packed bits)."""
        packed_mask = None
        if mask is not None:
            mask = np.asarray(mask)
            packed_mask = pack_mask(mask) if mask.dtype == bool else pack_array(mask)
        ref = (np.asarray(image), packed_mask, _plain(points), _plain(box), _plain(scribble))
        with self.lock:
            n = self.handle.call_with_image("add_reference", *ref)
            self._refs.append(ref)
        return int(n)

    def clear_references(self) -> None:
        with self.lock:
            self._refs.clear()
            self.handle.call("clear_references")

    def segment(self, target: np.ndarray, *, with_probability: bool = True):
        """As ``FewShotSegmenter.segment``; ``with_probability=False`` leaves ``probability`` None (a mask
        display needs only the mask, and the float32 probability is the largest part of the reply)."""
        from ...engine.fewshot import FewShotResult

        with self.lock:
            reply = self.handle.call_with_image("segment", target, bool(with_probability))
        prob = reply["probability"]
        return FewShotResult(mask=unpack_array(reply["mask"]), logits=unpack_array(reply["logits"]),
                             probability=None if prob is None else unpack_array(prob))

    def segment_many(self, targets, progress: Callable[[int, int], Any] | None = None, cancel: Any = None,
                     *, with_probability: bool = True) -> Iterator:
        """As ``FewShotSegmenter.segment_many`` (a generator): one worker call per target, progress after each,
        cancel read between targets on this machine."""
        total = len(targets) if hasattr(targets, "__len__") else -1
        for i, target in enumerate(targets):
            if cancel is not None and (cancel.is_set() if hasattr(cancel, "is_set") else cancel()):
                return
            result = self.segment(target, with_probability=with_probability)
            if progress is not None:
                progress(i + 1, total)
            yield result

    def segment_classes(self, targets: Sequence[np.ndarray], reference_labels: Sequence[np.ndarray],
                        reference_images: Sequence[np.ndarray] | None = None,
                        progress: Callable[[int, int], Any] | None = None, cancel: Any = None,
                        threshold: float = 0.5) -> list[np.ndarray]:
        """As ``FewShotSegmenter.segment_classes``: one job on the worker (class memories built once there),
        progress and cancel from this machine."""
        packed_targets = [pack_array(np.asarray(t)) for t in targets]
        labels = [pack_array(np.asarray(lab)) for lab in reference_labels]
        images = None if reference_images is None else [pack_array(np.asarray(im)) for im in reference_images]
        with self.lock:
            handle = self.handle
            job = handle.new_job()
            self.stats["images_sent"] += len(packed_targets) + len(images or ())
            self.stats["image_bytes_sent"] += sum(len(p["data"]) for p in packed_targets + (images or []))
            out = handle.call("segment_classes", job, packed_targets, labels, images, float(threshold), job=job,
                              progress=progress, cancel=cancel)
        return [unpack_array(p) for p in out]

    def __repr__(self) -> str:
        return f"RemoteFewShotSegmenter({len(self._refs)} references, on {self.session.address})"

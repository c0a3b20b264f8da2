"""The state and the one job body of "Few-shot series", without Qt or napari.

Why apart from the widget: the widget reads its controls into a :class:`FewShotRequest`, calls
:meth:`FewShotSession.run` and shows what the session's signals tell it; the session runs without a window in
tests (a :class:`~._tasks.SyncRunner`). The job body is the same here and on a GPU worker: it talks to a
few-shot segmenter (``engine.protocols.FewShot``: the local ``FewShotSegmenter`` or its stand-in on the
worker) and only ``where`` says which. Targets go in small groups, so the class memories are built once per
group, a worker gets few round trips, and only a few slices are in memory at a time.

Signals (emitted where the runner calls back: napari's GUI thread for a BackgroundTask):
``model_shown_changed(ModelShown)``; ``output_ready(out, refs, targets, store)`` once the (empty) result array
exists, ``slice_done(index)`` after each target slice was written into it; ``failed(text)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from psygnal import Signal

from ..compute import describe, is_local, open_fewshot, resolve_where
from ..engine.protocols import DEMO_PROMPT_NOTE
from ..engine.source import ImagePlan
from ._everything_job import ModelShown
from ._layer_pixels import new_labels_array
from ._tasks import JobRunner, Progress, WidgetError, error_text

__all__ = ["FewShotRequest", "FewShotSession", "fewshot_job", "parse_slices", "TARGETS_PER_CALL"]

CONTEXT = "Few-shot"
#: target slices segmented per call of the segmenter (class memories are built once per call)
TARGETS_PER_CALL = 4


def parse_slices(text: str, n: int) -> list[int]:
    """'0, 3, 5-7' -> [0, 3, 5, 6, 7]; negative indices count from the end ('-3--1': the last three). Raises
    WidgetError with the fix (a range written backwards is refused, not read as no slice at all)."""
    out: list[int] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                head, tail = part[1:].split("-", 1)
                a, b = int(part[0] + head), int(tail)
            else:
                a = b = int(part)
        except ValueError:
            raise WidgetError(f"cannot read slice list {text!r}: use numbers and ranges like '0, 3, 5-7'.") from None
        a, b = (a + n if a < 0 else a), (b + n if b < 0 else b)
        if b < a:
            raise WidgetError(f"slice range {part!r} runs backwards (slice {a} to slice {b}): write it from low to "
                              f"high, e.g. '{min(a, b)}-{max(a, b)}'.")
        out.extend(range(a, b + 1))
    bad = sorted({i for i in out if not 0 <= i < n})
    if bad:
        raise WidgetError(f"slices {bad} are outside the series (0..{n - 1}).")
    return sorted(set(out))


@dataclass(frozen=True)
class FewShotRequest:
    """A run, read on the GUI thread: the series (not read yet), the references, the model and its settings.

    Exactly one of ``labels`` (an array-like (Z, H, W) of class ids, read slice by slice) and ``prompts``
    ({slice: {"points"|"box"|"scribble": ...}}) is set.
    """

    plan: ImagePlan  # the series as the model sees it (level 0, channel choice, one intensity range)
    layer_name: str  # the series' layer
    source_name: str  # the references' layer, for the output layer's name
    labels: Any = None
    prompts: dict | None = None
    chosen: tuple[int, ...] | None = None  # reference slices the user listed (None: every slice with labels)
    model: Any = None  # a loaded SANSA model the user gave, or None
    model_text: str = ""  # a zoo name or checkpoint path typed by the user ("" = the given model or the default)
    image_size: int | None = 640
    precision: str = "auto"


def references(request: FewShotRequest) -> tuple[list[int], list[np.ndarray] | None]:
    """(reference slices, their label images or None for prompts); reads the labels one slice at a time.
    Raises WidgetError with the fix."""
    if request.labels is None:
        return sorted(request.prompts or {}), None
    read = {}
    for i in (request.chosen if request.chosen is not None else range(request.plan.n)):
        lab = np.asarray(request.labels[i])
        if lab.any():
            read[i] = lab
    refs = list(request.chosen) if request.chosen is not None else sorted(read)
    empty = [i for i in refs if i not in read]
    if empty:
        raise WidgetError(f"reference slices {empty} have no labels: paint the class on them or remove them "
                          f"from 'Reference slices'.")
    if not refs:
        raise WidgetError("no labels on any slice: paint the class on one or a few slices of the reference "
                          "Labels layer, then Run.")
    return refs, [read[i] for i in refs]


def _model_for(request: FewShotRequest, where):
    """The model to run: a loaded one here (the given one, the typed one or the default), a name on a worker."""
    text = request.model_text
    given = request.model
    if not is_local(where):
        return text or getattr(given, "name", None) or "sansa-universal"
    if given is not None and (not text or text == getattr(given, "name", None)):
        return given
    return resolve_where(where).model(text or None, "sansa")


def fewshot_job(request: FewShotRequest, where=None, on_segmenter: Callable[[Any], None] | None = None):
    """The job of one run (see ``_tasks``): here (``where`` None) or on a connected worker, the same steps.

    Yields :class:`ModelShown`, ``("output", out, refs, targets, store)`` and ``("slice", index)`` as slices
    are written into ``out``; returns the number of target slices segmented.
    """
    def job(is_cancelled):
        from ._common import import_engines, quiet_model_build

        yield Progress(0, 0, f"loading the model on {describe(where)}…")
        import_engines("napari_granseg.engine.fewshot")
        model = _model_for(request, where)
        plan = request.plan
        yield Progress(0, 0, "reading the references…")
        refs, ref_labels = references(request)
        # one range for the whole series (read from at most 16 slices): every slice scaled alike
        with quiet_model_build():
            segmenter = open_fewshot(model, image_size=request.image_size, precision=request.precision, where=where,
                                     intensity_range=plan.intensity())
        if on_segmenter is not None:
            on_segmenter(segmenter)
        if is_local(where):
            yield ModelShown(getattr(model, "name", "model"), bool(getattr(model, "is_demo", False)), model)
        else:
            yield ModelShown(f"{model} on {describe(where)}", bool(segmenter.is_demo))
        targets = [i for i in range(plan.n) if i not in refs]
        out, store = new_labels_array(plan.labels_shape, f"{request.layer_name} few-shot")
        for i, lab in zip(refs, ref_labels or ()):
            out[i] = lab
        yield ("output", out, refs, targets, store)
        ref_images = [plan[i] for i in refs]
        if ref_labels is None:
            segmenter.clear_references()
            for i, image in zip(refs, ref_images):
                segmenter.add_reference(image, **request.prompts[i])
        done = 0
        for start in range(0, len(targets), TARGETS_PER_CALL):
            if is_cancelled():
                break
            group = targets[start:start + TARGETS_PER_CALL]
            images = [plan[i] for i in group]  # read a few slices at a time
            if ref_labels is not None:
                labels = segmenter.segment_classes(images, ref_labels, ref_images, cancel=is_cancelled)
            else:
                labels = [r.mask.astype(np.int32) for r in segmenter.segment_many(images, cancel=is_cancelled)]
            for i, lab in zip(group, labels):
                out[i] = lab  # written here, in the worker (a zarr store: one chunk per slice)
                done += 1
                yield ("slice", i)
                yield Progress(done, len(targets), f"segmented slice {i} ({done}/{len(targets)})")
        return done

    return job


class FewShotSession:
    """One widget's few-shot runs (see the module docstring). After a run: ``segmenter`` (the engine or its
    stand-in on the worker), ``output`` (the label array), ``refs``, ``targets``, ``done`` (slices written)."""

    model_shown_changed = Signal(object)
    output_ready = Signal(object, object, object, object)
    slice_done = Signal(int)
    failed = Signal(str)

    def __init__(self, runner: JobRunner, notify: Callable[[str, str], None] | None = None, context: str = CONTEXT):
        self.runner = runner
        self.notify = notify  # notify(level, text): napari's notifications in the app, None in tests
        self.context = context
        self.segmenter = None
        self.model_shown: ModelShown | None = None
        self.output = None
        self.store = None
        self.refs: list[int] = []
        self.targets: list[int] = []
        self.done = 0
        self.last_error = ""
        self.prompted = False  # the last run's references were clicks/boxes/strokes (not labels)

    @property
    def running(self) -> bool:
        return self.runner.running

    def run(self, request: FewShotRequest, where=None) -> Any:
        """Start a run here (``where`` None) or on a connected worker; returns what the runner returns.
        Raises WidgetError while another run is going."""
        if self.runner.running:
            raise WidgetError("a few-shot run is in progress: wait, or press Cancel.")
        self.last_error = ""
        self.output, self.store, self.done, self.refs, self.targets = None, None, 0, [], []
        self.prompted, self.model_shown = request.labels is None, None
        job = fewshot_job(request, where, on_segmenter=self._segmenter_ready)
        return self.runner.start(job, on_yield=self._yielded, on_error=self._error, message="starting…")

    def cancel(self) -> None:
        """Stop after the current group of slices (slices done so far stay in the output)."""
        self.runner.cancel()

    def caveat(self) -> str:
        """What the person should know about the last run's result ("" when nothing): the demo model from prompts."""
        demo = self.model_shown is not None and self.model_shown.demo
        return DEMO_PROMPT_NOTE if demo and self.prompted else ""

    def fail(self, text: str) -> None:
        """Record ``text`` (already shown to the user) as the last error."""
        self.last_error = text
        self.failed.emit(text)

    def _segmenter_ready(self, segmenter) -> None:  # worker thread: one reference assignment
        self.segmenter = segmenter

    def _yielded(self, item) -> None:
        if isinstance(item, ModelShown):
            self.model_shown = item
            self.model_shown_changed.emit(item)
        elif item[0] == "output":
            _, self.output, self.refs, self.targets, self.store = item
            self.output_ready.emit(self.output, self.refs, self.targets, self.store)
        elif item[0] == "slice":
            self.done += 1
            self.slice_done.emit(item[1])

    def _error(self, exc: BaseException) -> None:
        text = error_text(exc, self.context)
        if self.notify is not None:
            self.notify("error", text)
        self.fail(text)

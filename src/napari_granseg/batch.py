"""Batch segmentation: the same segmentation on thousands of images or a stack larger than memory (napari-free).

Why this shape:

- A :class:`Job` is a small, picklable description (mode, granularity, model *reference*, settings). Workers
  receive the job and a file path, load the model themselves once per process (:func:`worker_model`, a
  module-level cache keyed by the model reference), read their input, write their output atomically and return
  a small status dict. Models, images and embeddings never travel between processes, so the same code runs
  in-process, on a ``dask.distributed`` LocalCluster, or on a real cluster given a scheduler address (with
  inputs and outputs on a shared file system).
- Resumable: an output is finished when it exists and carries the job's fingerprint (label TIFFs keep it in
  their description; zarr stores keep a per-slice ``done`` flag). A rerun skips finished items; a changed job
  (other granularity, model or prompts) recomputes them.
- Safe: one failing item (unreadable file, bad shape, ...) is recorded with its error and the run goes on;
  every write is atomic, so an interrupted run never leaves a partial or corrupt output.

Python use (also from the napari console)::

    from napari_granseg.batch import Job, ModelRef, run_folder, run_stack
    report = run_folder("images/", "labels/", Job(mode="prompts", prompts="prompts.csv", granularity=0.3))
    report = run_stack("big_stack.tif", "big_stack_labels.zarr", Job(mode="whole", granularity=0.5), workers=2)
    print(report.summary())

The prompt file format is documented in :func:`read_prompts` and docs/batch.md.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .io import (LabelsZarr, UnreadableImageError, is_image_file, labels_output_path, open_stack,
                 read_image, read_labels_metadata, stack_shape, write_labels_tiff)

__all__ = ["ModelRef", "Job", "Prompt", "PromptFileError", "BatchReport", "read_prompts", "expand_inputs",
           "segment_image", "segment_with_prompts", "run_folder", "run_stack", "process_item", "process_slice",
           "worker_model", "make_client", "MODES"]

MODES = ("whole", "prompts", "fewshot")
_FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------------------ job
@dataclass(frozen=True)
class ModelRef:
    """Which model to load, by name or path (never the model itself: workers load it).

    name: a zoo name, a checkpoint path, or None (the best cached model of the mode's kind, else the demo;
    with ``kind`` given and no name: random weights, for tests only, not reproducible across processes).
    """

    name: str | None = None
    kind: str | None = None
    config: str | None = None
    device: str = "auto"
    base_checkpoint: str | None = None

    def resolved(self, mode: str = "whole") -> "ModelRef":
        """Fix the default model now (on the client), so every worker and the fingerprint agree on it."""
        if self.name is not None or self.kind is not None:
            if self.name is not None and Path(self.name).expanduser().is_file():
                return ModelRef(str(Path(self.name).expanduser().resolve()), self.kind, self.config, self.device,
                                self.base_checkpoint)
            return self
        from .zoo import default_model_name

        return ModelRef(default_model_name("sansa" if mode == "fewshot" else "unsamv2"), None, self.config,
                        self.device, self.base_checkpoint)

    def key(self) -> tuple:
        return (self.name, self.kind, self.config, self.device, self.base_checkpoint)

    def load(self):
        """Load the model (no cache; see :func:`worker_model`)."""
        from .zoo import ZOO, load_model

        named = self.name is not None and self.name in ZOO
        return load_model(self.name, kind=None if named else self.kind, config=self.config, device=self.device,
                          base_checkpoint=self.base_checkpoint)


@dataclass(frozen=True)
class Prompt:
    """One click: (row, col) in pixels (napari order). label 1 = positive, 0 = negative.

    granularity None: the job's. object_id None: each positive point is its own object; points sharing an
    id form one object (extra positives/negatives refine it). ``slice``: the stack index (stacks only).
    """

    row: float
    col: float
    granularity: float | None = None
    object_id: int | None = None
    label: int = 1
    slice: int | None = None


@dataclass
class Job:
    """What to do to every item. Small and picklable: it is sent to every worker.

    mode: "whole" (instance labels of the whole image at ``granularity``, :func:`gs.segment_everything`),
    "prompts" (objects from a prompt file, see :func:`read_prompts`) or "fewshot" (classes from reference
    images + label images, see :func:`segment_fewshot`).
    settings: extra keyword arguments of the whole-image engine (e.g. ``points_per_side``).
    torch_threads: torch threads per worker process (distributed runs; None: cores / workers).
    """

    mode: str = "whole"
    granularity: float = 0.5
    model: ModelRef = field(default_factory=ModelRef)
    settings: dict[str, Any] = field(default_factory=dict)
    prompts: str | os.PathLike | Mapping[str, Sequence] | None = None
    references: str | os.PathLike | None = None
    reference_labels: str | os.PathLike | None = None
    image_size: int = 640
    overwrite: bool = False
    torch_threads: int | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; use one of {MODES}")
        if not 0.1 <= float(self.granularity) <= 1.0:
            raise ValueError(f"granularity {self.granularity} is outside [0.1, 1] (0.1 = small parts, 1 = whole objects)")
        if self.mode == "prompts" and self.prompts is None:
            raise ValueError("mode 'prompts' needs a prompt file: Job(mode='prompts', prompts='prompts.csv') "
                             "(CLI: --prompts FILE); see docs/batch.md for the format")
        if self.mode == "fewshot" and (self.references is None or self.reference_labels is None):
            raise ValueError("mode 'fewshot' needs references=DIR of images and reference_labels=DIR of label "
                             "images (CLI: --references DIR --reference-labels DIR)")

    def core(self) -> dict[str, Any]:
        """The part of the job that decides the result (for fingerprints; prompts are added per item)."""
        core = {"mode": self.mode, "granularity": round(float(self.granularity), 6),
                "model": list(self.model.key()[:3]), "settings": _jsonable(self.settings), "v": _FORMAT_VERSION}
        if self.mode == "fewshot":
            core["image_size"] = int(self.image_size)
            core["references"] = [[str(a), str(b), _file_stamp(a), _file_stamp(b)]
                                  for a, b in reference_pairs(self.references, self.reference_labels)]
        return core


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _file_stamp(path: str | os.PathLike) -> list[int]:
    try:
        st = os.stat(path)
        return [int(st.st_size), int(st.st_mtime_ns)]
    except OSError:
        return [-1, -1]


def fingerprint(core: Mapping[str, Any], prompts: Sequence[Prompt] = ()) -> str:
    """A short hash of what decides an item's result (job core + the item's prompts)."""
    payload = json.dumps({"job": _jsonable(core), "prompts": [asdict(p) for p in prompts]}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ prompts
class PromptFileError(ValueError):
    """A prompt file that cannot be used; the message names the file and line."""


_ALIASES = {"image": "image", "file": "image", "filename": "image", "path": "image",
            "row": "row", "y": "row", "col": "col", "column": "col", "x": "col",
            "granularity": "granularity", "g": "granularity",
            "object": "object_id", "object_id": "object_id", "id": "object_id",
            "label": "label", "positive": "label", "slice": "slice", "z": "slice", "t": "slice", "index": "slice"}


def _prompt_from_record(rec: Mapping[str, Any], where: str, image: str | None = None) -> tuple[str, Prompt]:
    norm = {}
    for k, v in rec.items():
        key = _ALIASES.get(str(k).strip().lower())
        if key is not None and v not in (None, ""):
            norm[key] = v.strip() if isinstance(v, str) else v
    image = image if image is not None else norm.get("image")
    if image in (None, ""):
        raise PromptFileError(f"{where}: no image name (column 'image')")
    for need in ("row", "col"):
        if need not in norm:
            raise PromptFileError(f"{where}: missing {need!r} (columns: image,row,col[,granularity,object,label,slice])")

    def num(key, cast):
        if key not in norm:
            return None
        try:
            value = float(norm[key])
            return cast(value) if cast is float or value == int(value) else _bad(key, norm[key])
        except (TypeError, ValueError):
            return _bad(key, norm[key])

    def _bad(key, value):
        raise PromptFileError(f"{where}: {key} {value!r} is not a {'number' if key in ('row', 'col', 'granularity') else 'whole number'}")

    g = num("granularity", float)
    if g is not None and not 0.1 <= g <= 1.0:
        raise PromptFileError(f"{where}: granularity {g} is outside [0.1, 1]")
    label = num("label", int)
    if label not in (None, 0, 1):
        raise PromptFileError(f"{where}: label {label} must be 1 (positive) or 0 (negative)")
    return str(image), Prompt(row=num("row", float), col=num("col", float), granularity=g,
                              object_id=num("object_id", int), label=1 if label is None else label,
                              slice=num("slice", int))


def read_prompts(source: str | os.PathLike | Mapping[str, Sequence]) -> dict[str, list[Prompt]]:
    """Read a prompt file into ``{image name: [Prompt, ...]}``.

    CSV (comma separated, header line, ``#`` comments): ``image,row,col[,granularity][,object][,label][,slice]``::

        image,row,col,granularity,object
        cells_000.tif,120,88,0.3,1
        cells_000.tif,40,200,0.8,2

    JSON: a list of such records (``[{"image": "a.tif", "row": 1, "col": 2, "granularity": 0.3}, ...]``) or
    ``{"a.tif": [{"row": 1, "col": 2}, [row, col], ...], ...}``. A Python mapping of the same shape is taken
    as is, so ``{"a.tif": [(120, 88), (40, 200)]}`` works from scripts.

    image: a file name, a path relative to the prompt file, or an absolute path. row/col: pixels (float ok).
    granularity: per point, else the job's. object: points with the same id make one object (its label
    value); without ids every positive point is a new object, numbered in file order. label: 1 positive
    (default), 0 negative. slice: the stack index when the image is a stack.
    """
    if isinstance(source, Mapping):
        return _prompts_from_mapping(source, "prompts")
    path = Path(source)
    if not path.is_file():
        raise PromptFileError(f"prompt file {path} not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise PromptFileError(f"prompt file {path} cannot be read as text ({err})") from err
    out: dict[str, list[Prompt]] = {}
    if path.suffix.lower() == ".json" or text.lstrip()[:1] in ("[", "{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise PromptFileError(f"{path} line {err.lineno}: invalid JSON ({err.msg})") from err
        if isinstance(data, Mapping):
            return _prompts_from_mapping(data, str(path))
        if not isinstance(data, list):
            raise PromptFileError(f"{path}: expected a JSON list of records or an object keyed by image")
        for i, rec in enumerate(data):
            if not isinstance(rec, Mapping):
                raise PromptFileError(f"{path} record {i}: expected an object with image,row,col")
            image, prompt = _prompt_from_record(rec, f"{path} record {i}")
            out.setdefault(image, []).append(prompt)
        return out
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise PromptFileError(f"prompt file {path} is empty")
    header_no, header = lines[0]
    fields = [f.strip().lower() for f in next(csv.reader([header]))]
    if "row" not in {_ALIASES.get(f) for f in fields}:
        raise PromptFileError(f"{path} line {header_no}: expected a header like 'image,row,col,granularity,object', "
                              f"got {header!r}")
    for n, line in lines[1:]:
        values = next(csv.reader([line]))
        if len(values) != len(fields):
            raise PromptFileError(f"{path} line {n}: {len(values)} values for {len(fields)} columns ({line!r})")
        image, prompt = _prompt_from_record(dict(zip(fields, values)), f"{path} line {n}")
        out.setdefault(image, []).append(prompt)
    return out


def _prompts_from_mapping(data: Mapping, where: str) -> dict[str, list[Prompt]]:
    out: dict[str, list[Prompt]] = {}
    for image, recs in data.items():
        for i, rec in enumerate(recs):
            w = f"{where} [{image!r}][{i}]"
            if isinstance(rec, Prompt):
                prompt = rec
            elif isinstance(rec, Mapping):
                prompt = _prompt_from_record(rec, w, image=str(image))[1]
            else:
                vals = list(rec)
                if len(vals) < 2:
                    raise PromptFileError(f"{w}: expected (row, col[, granularity[, object]])")
                keys = ("row", "col", "granularity", "object_id")
                prompt = _prompt_from_record(dict(zip(keys, vals)), w, image=str(image))[1]
            out.setdefault(str(image), []).append(prompt)
    return out


def match_prompts(prompts: Mapping[str, list[Prompt]], inputs: Sequence[Path],
                  base: Path | None = None) -> tuple[dict[Path, list[Prompt]], list[str]]:
    """Assign prompt keys to input files (absolute path, path relative to ``base`` or cwd, or file name).

    Returns ({input: prompts}, [keys that matched no input]).
    """
    by_abs = {p.resolve(): p for p in inputs}
    by_name: dict[str, list[Path]] = {}
    for p in inputs:
        by_name.setdefault(p.name, []).append(p)
    matched: dict[Path, list[Prompt]] = {}
    unmatched = []
    for key, plist in prompts.items():
        hit = None
        for cand in ([Path(key)] + ([base / key] if base is not None else [])):
            r = cand.expanduser().resolve()
            if r in by_abs:
                hit = by_abs[r]
                break
        if hit is None and len(by_name.get(Path(key).name, [])) == 1:
            hit = by_name[Path(key).name][0]
        if hit is None:
            unmatched.append(key)
        else:
            matched.setdefault(hit, []).extend(plist)
    return matched, unmatched


# ------------------------------------------------------------------------------------------------ engines
def segment_with_prompts(image: np.ndarray, prompts: Sequence[Prompt], model=None,
                         granularity: float = 0.5) -> np.ndarray:
    """Label image from clicks: one object per object id (or per positive point), ids as label values.

    With one positive point per object and no ids this is exactly :func:`napari_granseg.segment`; overlaps
    go to the object with the higher logit.
    """
    from .api import get_predictor

    prompts = list(prompts)
    objects: dict[int, list[Prompt]] = {}
    shared_neg = [p for p in prompts if p.object_id is None and p.label == 0]
    explicit = [p.object_id for p in prompts if p.object_id is not None]
    next_id = 1
    for p in prompts:
        if p.object_id is not None:
            objects.setdefault(int(p.object_id), []).append(p)
        elif p.label == 1:
            while next_id in explicit or next_id in objects:
                next_id += 1
            objects[next_id] = [p]
    objects = {k: v for k, v in objects.items() if any(q.label == 1 for q in v)}
    image = np.asarray(image)
    out = np.zeros(image.shape[:2], np.int32)
    if not objects:
        return out
    pred = get_predictor(model)
    pred.set_image(image)
    best = np.full(out.shape, -np.inf, np.float32)
    for obj_id, pts in objects.items():
        pts = pts + shared_neg
        xy = [[p.col, p.row] for p in pts]
        lb = [p.label for p in pts]
        g = next((p.granularity for p in pts if p.label == 1 and p.granularity is not None), granularity)
        logits, _, _ = pred.predict(xy, lb, granularity=float(g) if pred.has_granularity else None,
                                    return_logits=True)
        lg = logits[0]
        take = (lg > pred.mask_threshold) & (lg > best)
        out[take] = obj_id
        best[take] = lg[take]
    return out


def reference_pairs(references: str | os.PathLike | None,
                    reference_labels: str | os.PathLike | None) -> list[tuple[Path, Path]]:
    """Pair each reference image with its label image by stem (``a.tif`` <-> ``a.tif``/``a_labels.tif``/``a_mask.png``)."""
    if references is None or reference_labels is None:
        return []
    images = expand_inputs([references])
    lab_dir = Path(reference_labels)
    if not lab_dir.is_dir():
        raise FileNotFoundError(f"reference label folder {lab_dir} not found")
    labels = {}
    for p in sorted(lab_dir.iterdir()):
        if p.suffix.lower() in (".tif", ".tiff", ".png", ".bmp", ".jpg", ".jpeg"):
            stem = p.stem
            for suffix in ("_labels", "_label", "_mask", "_masks"):
                if stem.endswith(suffix):
                    stem = stem[: -len(suffix)]
                    break
            labels.setdefault(stem, p)
    pairs, missing = [], []
    for img in images:
        if img.stem in labels:
            pairs.append((img, labels[img.stem]))
        else:
            missing.append(img.name)
    if not pairs:
        raise FileNotFoundError(f"no reference image in {references} has a label image in {lab_dir} "
                                f"(name it like the image, or <stem>_labels.tif)")
    if missing:
        raise FileNotFoundError(f"reference images without label images in {lab_dir}: {missing[:10]}")
    return pairs


def _build_fewshot(model, pairs: Sequence[tuple[Path, Path]], image_size: int) -> dict[int, Any]:
    """One FewShotSegmenter per class id found in the reference labels (class id -> segmenter)."""
    from .engine.fewshot import FewShotSegmenter

    refs = [(read_image(a), read_image(b)) for a, b in pairs]
    classes = sorted({int(c) for _, lab in refs for c in np.unique(lab) if c > 0})
    if not classes:
        raise ValueError("the reference label images are all background (0): label at least one object")
    segs = {}
    for c in classes:
        seg = FewShotSegmenter(model, image_size=image_size)
        for img, lab in refs:
            lab2 = lab if lab.ndim == 2 else lab[..., 0]
            if (lab2 == c).any():
                seg.add_reference(img, mask=lab2 == c)
        segs[c] = seg
    return segs


def segment_fewshot(image: np.ndarray, segmenters: Mapping[int, Any]) -> np.ndarray:
    """Class label image: a pixel gets the class whose segmenter claims it; where several claim it, the one
    with the highest probability (ties: the lower id)."""
    image = np.asarray(image)
    out = np.zeros(image.shape[:2], np.int32)
    best = np.full(out.shape, -np.inf, np.float32)
    for c in sorted(segmenters):
        res = segmenters[c].segment(image)
        mask = np.asarray(res.mask, bool)
        prob = getattr(res, "probability", None)
        score = np.asarray(prob, np.float32) if prob is not None else mask.astype(np.float32)
        take = mask & (score > best)
        out[take] = c
        best[take] = score[take]
    return out


def segment_image(image: np.ndarray, job: Job, prompts: Sequence[Prompt] = (), model=None) -> np.ndarray:
    """Segment one in-memory image as ``job`` says (the per-item step of every batch run)."""
    model = model if model is not None else worker_model(job.model.resolved(job.mode))
    if job.mode == "whole":
        from .api import segment_everything

        return np.asarray(segment_everything(image, granularity=job.granularity, model=model, **job.settings))
    if job.mode == "prompts":
        return segment_with_prompts(image, prompts, model=model, granularity=job.granularity)
    return segment_fewshot(image, _fewshot_for(job, model))


# ------------------------------------------------------------------------------------------------ per-process state
_lock = threading.Lock()
_MODELS: dict[tuple, Any] = {}
_FEWSHOT: dict[tuple, dict] = {}
_STACKS: dict[tuple, Any] = {}


def worker_model(ref: ModelRef):
    """The model of ``ref`` in this process, loaded once (one model per worker process)."""
    key = ref.key()
    with _lock:
        if key not in _MODELS:
            _MODELS[key] = ref.load()
        return _MODELS[key]


def _fewshot_for(job: Job, model) -> dict:
    key = (id(model), str(job.references), str(job.reference_labels), int(job.image_size))
    with _lock:
        if key not in _FEWSHOT:
            _FEWSHOT[key] = _build_fewshot(model, reference_pairs(job.references, job.reference_labels),
                                           job.image_size)
        return _FEWSHOT[key]


def preload(job: Job, model=None):
    """Load this process's model (and few-shot reference memory) for ``job``; returns the model.

    Run on every worker before the tasks (``client.run``), so a missing checkpoint is reported once with the
    zoo's message instead of failing every item."""
    _set_threads(job)
    model = model if model is not None else worker_model(job.model.resolved(job.mode))
    if job.mode == "fewshot":
        _fewshot_for(job, model)
    return model


def _preload_worker(job: Job) -> int:
    """``client.run`` target: load the worker's model, return only its pid (never the model)."""
    preload(job)
    return os.getpid()


def _set_threads(job: Job) -> None:
    if job.torch_threads:
        import torch

        if torch.get_num_threads() != job.torch_threads:
            torch.set_num_threads(int(job.torch_threads))


# ------------------------------------------------------------------------------------------------ items
@dataclass(frozen=True)
class Item:
    """One unit of work: an input file (or one slice of a stack) and where its result goes."""

    input: str
    output: str
    prompts: tuple[Prompt, ...] = ()
    fingerprint: str = ""
    index: int | None = None  # stack slice


def _is_stack_shape(shape: Sequence[int]) -> bool:
    return len(shape) == 4 or (len(shape) == 3 and shape[-1] not in (1, 3, 4))


def process_item(item: Item, job: Job, model=None) -> dict[str, Any]:
    """Segment one image file and write its label TIFF atomically. Never raises for a bad item: it returns
    ``{"status": "failed", "error": ...}``, so one bad file does not stop a run of thousands."""
    t0 = time.perf_counter()
    status = {"input": item.input, "output": item.output, "index": item.index, "pid": os.getpid()}
    try:
        _set_threads(job)
        image = read_image(item.input)
        if image.ndim >= 3 and _is_stack_shape(image.shape):
            raise ValueError(f"{item.input} is a stack of shape {image.shape}, not one image: segment it with "
                             f"run_stack / `granseg segment {item.input} --zarr OUT.zarr`")
        labels = segment_image(image, job, item.prompts, model=model)
        meta = {"granseg_fingerprint": item.fingerprint, "source": Path(item.input).name, "mode": job.mode,
                "granularity": float(job.granularity), "model": str(job.model.name or job.model.kind)}
        write_labels_tiff(item.output, labels, meta)
        return {**status, "status": "done", "n_labels": int(len(np.unique(labels)) - (labels == 0).any()),
                "seconds": time.perf_counter() - t0}
    except Exception as err:  # recorded, the run goes on
        return {**status, "status": "failed", "error": f"{type(err).__name__}: {err}",
                "seconds": time.perf_counter() - t0}


def process_slice(item: Item, job: Job, model=None) -> dict[str, Any]:
    """Segment slice ``item.index`` of the stack ``item.input`` and write it into the zarr ``item.output``.

    The stack is opened lazily once per process and only this slice is read (out-of-core)."""
    t0 = time.perf_counter()
    status = {"input": item.input, "output": item.output, "index": item.index, "pid": os.getpid()}
    try:
        _set_threads(job)
        key = (item.input, tuple(_file_stamp(item.input)))
        with _lock:  # opening a TIFF parses all its pages: once per process and file version
            stack = _STACKS.get(key)
            if stack is None:
                _STACKS.clear()
                stack = _STACKS[key] = open_stack(item.input)
        store = LabelsZarr.open(item.output)
        image = np.asarray(stack[item.index].compute(scheduler="synchronous"))  # in this process, even on a worker
        labels = segment_image(image, job, item.prompts, model=model)
        store.write(item.index, labels)
        return {**status, "status": "done", "n_labels": int(len(np.unique(labels)) - (labels == 0).any()),
                "seconds": time.perf_counter() - t0}
    except Exception as err:
        return {**status, "status": "failed", "error": f"{type(err).__name__}: {err}",
                "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------------ report
@dataclass
class BatchReport:
    """What a run did: ``done``/``skipped``/``failed`` lists of status dicts (failed ones carry ``error``)."""

    done: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 1

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def images_per_s(self) -> float:
        return len(self.done) / self.seconds if self.seconds > 0 else 0.0

    def add(self, result: Mapping[str, Any]) -> None:
        {"done": self.done, "skipped": self.skipped}.get(result.get("status"), self.failed).append(dict(result))

    def summary(self) -> str:
        speed = (f"{self.images_per_s:.2f} items/s, {self.workers} worker{'s' if self.workers != 1 else ''}"
                 if self.done else "nothing to compute")
        lines = [f"{len(self.done)} done, {len(self.skipped)} skipped (already finished or no prompts), "
                 f"{len(self.failed)} failed in {self.seconds:.1f} s ({speed})"]
        for f in self.failed[:20]:
            where = f["input"] + (f"[{f['index']}]" if f.get("index") is not None else "")
            lines.append(f"  FAILED {where}: {f.get('error')}")
        if len(self.failed) > 20:
            lines.append(f"  ... and {len(self.failed) - 20} more (see the report JSON)")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "skipped": self.skipped, "failed": self.failed, "warnings": self.warnings,
                "seconds": self.seconds, "workers": self.workers, "images_per_s": self.images_per_s}


# ------------------------------------------------------------------------------------------------ runs
def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Image files from files and folders (folders: image suffixes only, ``*_labels.*`` outputs excluded)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir() and p.suffix.lower() != ".zarr":
            found = p.rglob("*") if recursive else p.iterdir()
            files += sorted(f for f in found if f.is_file() and is_image_file(f))
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"input {p} does not exist")
    seen, unique = set(), []
    for f in files:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique


def _finished(output: Path, fp: str, source: Path) -> bool:
    if not output.is_file():
        return False
    meta = read_labels_metadata(output)
    if not meta or meta.get("granseg_fingerprint") != fp:
        return False
    try:
        return output.stat().st_mtime_ns >= source.stat().st_mtime_ns
    except OSError:
        return False


def make_client(workers: int | None = None, scheduler: str | None = None, threads_per_worker: int = 1):
    """A dask.distributed Client: to ``scheduler`` if given, else a LocalCluster of ``workers`` processes.

    Returns (client, owned) where ``owned`` says the caller should close it (and its cluster)."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler), True
    cluster = LocalCluster(n_workers=int(workers or 2), threads_per_worker=threads_per_worker, processes=True,
                           dashboard_address=None)
    return Client(cluster), True


def _close_client(client) -> None:
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def _execute(items: list[Item], job: Job, fn: Callable, report: BatchReport, progress: bool, desc: str,
             client=None, workers: int | None = None, scheduler: str | None = None, model=None,
             on_result: Callable[[dict], None] | None = None) -> None:
    """Run ``fn(item, job)`` for every item, in-process or on dask.distributed; collect into ``report``."""
    from tqdm.auto import tqdm

    owned = False
    distributed = client is not None or scheduler is not None or (workers or 1) > 1
    if distributed and model is not None:
        raise ValueError("a loaded model cannot be sent to workers: pass Job(model=ModelRef(name/path, kind, "
                         "config)) so each worker loads its own copy")
    if not items:
        report.workers = 0
        return
    if not distributed:  # load the model (and few-shot references) first: a missing model is one clear error
        model = preload(job, model)
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
    try:
        if not distributed:
            report.workers = 1
            for item in items:
                res = fn(item, job, model=model)
                report.add(res)
                bar.update(1)
                if on_result is not None:
                    on_result(res)
            return
        from dask.distributed import as_completed

        if client is None:
            client, owned = make_client(workers, scheduler)
        n_workers = max(1, len(client.scheduler_info().get("workers", {})) or int(workers or 1))
        report.workers = n_workers
        if job.torch_threads is None:
            job = _with_threads(job, max(1, (os.cpu_count() or 1) // n_workers))
        client.run(_preload_worker, job)  # one model per worker process, loaded now; errors surface here, once
        futures = client.map(fn, items, job=job, pure=False)
        try:
            for fut in as_completed(futures):
                try:
                    res = fut.result()
                except Exception as err:  # a worker died: record the item, go on
                    item = items[futures.index(fut)]
                    res = {"input": item.input, "output": item.output, "index": item.index, "status": "failed",
                           "error": f"worker error: {type(err).__name__}: {err}"}
                report.add(res)
                bar.update(1)
                if on_result is not None:
                    on_result(res)
        except BaseException:
            client.cancel(futures)
            raise
    finally:
        bar.close()
        if owned:
            _close_client(client)


def _with_threads(job: Job, threads: int) -> Job:
    from dataclasses import replace

    return replace(job, torch_threads=threads)


def run_folder(inputs: str | os.PathLike | Iterable[str | os.PathLike], out_dir: str | os.PathLike | None,
               job: Job, progress: bool = True, client=None, workers: int | None = None,
               scheduler: str | None = None, model=None, recursive: bool = False,
               on_result: Callable[[dict], None] | None = None) -> BatchReport:
    """Segment every image in ``inputs`` (files and/or folders) and write ``<stem>_labels.tif`` per image.

    out_dir: output folder (sub-folders mirrored when ``recursive``), None: next to each input.
    client / workers / scheduler: run on dask.distributed (an existing Client; a LocalCluster of ``workers``
    processes; or a scheduler address). Default: in this process. model: an already loaded model for
    in-process runs (workers always load ``job.model`` themselves). on_result: called with each item's
    status dict as it finishes (progress hooks; raising there stops the run cleanly).
    Finished outputs of the same job are skipped; failures are reported, not raised.
    """
    t0 = time.perf_counter()
    files = expand_inputs(inputs, recursive=recursive)
    if not files:
        from .io import IMAGE_SUFFIXES

        raise FileNotFoundError(f"no images found in {inputs} (looked for {', '.join(IMAGE_SUFFIXES)}; "
                                f"files named *_labels.* are outputs and are left out)")
    job = _resolved(job)
    report = BatchReport()
    per_image: dict[Path, list[Prompt]] = {}
    if job.mode == "prompts":
        base = Path(job.prompts).parent if isinstance(job.prompts, (str, os.PathLike)) else None
        per_image, unmatched = match_prompts(read_prompts(job.prompts), files, base)
        if unmatched:
            report.warnings.append(f"prompts for {len(unmatched)} image(s) that are not among the inputs: "
                                   f"{unmatched[:10]}")
    roots = [Path(i).expanduser() for i in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    core = job.core()
    items, outputs = [], {}
    for f in files:
        root = next((r for r in roots if r.is_dir() and r in f.parents), None)
        out = labels_output_path(f, out_dir, root=root)
        if out in outputs:
            report.failed.append({"input": str(f), "output": str(out), "index": None, "status": "failed",
                                  "error": f"same output name as {outputs[out]}: rename one of them"})
            continue
        outputs[out] = f
        prompts = tuple(per_image.get(f, ()))
        if job.mode == "prompts" and not prompts:
            report.skipped.append({"input": str(f), "output": str(out), "index": None, "status": "skipped",
                                   "reason": "no prompts for this image"})
            continue
        fp = fingerprint(core, prompts)
        if not job.overwrite and _finished(out, fp, f):
            report.skipped.append({"input": str(f), "output": str(out), "index": None, "status": "skipped",
                                   "reason": "already finished"})
            continue
        items.append(Item(str(f), str(out), prompts, fp))
    _execute(items, job, process_item, report, progress, "segment", client, workers, scheduler, model, on_result)
    report.seconds = time.perf_counter() - t0
    return report


def run_stack(path: str | os.PathLike, out_zarr: str | os.PathLike, job: Job, progress: bool = True,
              client=None, workers: int | None = None, scheduler: str | None = None, model=None,
              on_result: Callable[[dict], None] | None = None) -> BatchReport:
    """Segment every slice of a TIFF/zarr stack (N, H, W[, C]) into a zarr store (``labels`` (N, H, W)).

    Streams: each task reads one slice (dask/zarr chunk) and writes one chunk, so memory holds one slice per
    worker whatever the stack size. Finished slices (``done`` flag) are skipped on a rerun of the same job.
    In prompts mode, prompt rows name the stack file and give ``slice``; slices without prompts are skipped.
    """
    t0 = time.perf_counter()
    path = Path(path)
    try:
        shape = stack_shape(path)
    except Exception as err:
        raise UnreadableImageError(f"{path}: cannot open as a stack ({type(err).__name__}: {err})") from err
    if not _is_stack_shape(shape):
        raise ValueError(f"{path} has shape {shape}: one image, not a stack; use run_folder / "
                         f"`granseg segment {path} --out DIR`")
    job = _resolved(job)
    report = BatchReport()
    per_slice: dict[int, list[Prompt]] = {}
    if job.mode == "prompts":
        base = Path(job.prompts).parent if isinstance(job.prompts, (str, os.PathLike)) else None
        matched, unmatched = match_prompts(read_prompts(job.prompts), [path], base)
        for p in matched.get(path, []):
            if p.slice is None or not 0 <= p.slice < shape[0]:
                raise PromptFileError(f"prompt {p} for stack {path.name} needs a slice in [0, {shape[0] - 1}]")
            per_slice.setdefault(p.slice, []).append(p)
        if unmatched:
            report.warnings.append(f"prompts for images other than {path.name}: {unmatched[:10]}")
    core = {**job.core(), "source": str(path.resolve()), "source_stamp": _file_stamp(path),
            "prompts": fingerprint({}, [p for s in sorted(per_slice) for p in per_slice[s]])}
    store = LabelsZarr(out_zarr, (shape[0],) + tuple(shape[1:3]), job=_jsonable(core), overwrite=job.overwrite)
    done = set(store.done_indices())
    items = []
    for i in range(shape[0]):
        prompts = tuple(per_slice.get(i, ()))
        if job.mode == "prompts" and not prompts:
            report.skipped.append({"input": str(path), "output": str(out_zarr), "index": i, "status": "skipped",
                                   "reason": "no prompts for this slice"})
        elif i in done:
            report.skipped.append({"input": str(path), "output": str(out_zarr), "index": i, "status": "skipped",
                                   "reason": "already finished"})
        else:
            items.append(Item(str(path), str(out_zarr), prompts, "", index=i))
    _execute(items, job, process_slice, report, progress, f"segment {path.name}", client, workers, scheduler,
             model, on_result)
    report.seconds = time.perf_counter() - t0
    return report


def _resolved(job: Job) -> Job:
    from dataclasses import replace

    return replace(job, model=job.model.resolved(job.mode))

"""Running a job over a folder or a stack: planning, local or dask.distributed execution, and the report.

Planning happens on the client before any image is computed: inputs are listed, prompts matched, finished
outputs skipped, outputs that are not ours refused, and every output folder probed for writing. Then the
items run in this process or on dask.distributed workers (:mod:`napari_granseg.batch.worker`).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..io import LabelsZarr, UnreadableImageError, labels_output_path, read_labels_metadata, stack_shape
from .inputs import Item, content_digest, expand_inputs, file_stamp, is_stack_shape, no_images_error, stack_intensity
from .job import Job, fingerprint, jsonable
from .outputs import (OutputNotWritableError, check_writable, disk_error_line, foreign_output,
                      refusal_message)
from .prompts import Prompt, PromptFileError, check_prompt_images, read_prompts
from .worker import preload, preload_worker, process_item, process_slice

__all__ = ["BatchReport", "run_folder", "run_stack", "make_client", "close_client"]


@dataclass
class BatchReport:
    """What a run did: ``done``/``skipped``/``refused``/``failed`` lists of status dicts.

    refused: outputs not written because a file this tool did not write is in their place (kept as it was).
    """

    done: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 1

    @property
    def ok(self) -> bool:
        return not self.failed and not self.refused

    @property
    def images_per_s(self) -> float:
        return len(self.done) / self.seconds if self.seconds > 0 else 0.0

    def add(self, result: Mapping[str, Any]) -> None:
        lists = {"done": self.done, "skipped": self.skipped, "refused": self.refused}
        lists.get(result.get("status"), self.failed).append(dict(result))

    def summary(self) -> str:
        speed = (f"{self.images_per_s:.2f} items/s, {self.workers} worker{'s' if self.workers != 1 else ''}"
                 if self.done else "nothing to compute")
        lines = [f"{len(self.done)} done, {len(self.skipped)} skipped (already finished or no prompts), "
                 + (f"{len(self.refused)} refused, " if self.refused else "")
                 + f"{len(self.failed)} failed in {self.seconds:.1f} s ({speed})"]
        for kind, rows in (("REFUSED", self.refused), ("FAILED", self.failed)):
            for f in rows[:20]:
                where = f["input"] + (f"[{f['index']}]" if f.get("index") is not None else "")
                lines.append(f"  {kind} {where}: {f.get('error')}")
            if len(rows) > 20:
                lines.append(f"  ... and {len(rows) - 20} more (see the report JSON)")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "skipped": self.skipped, "refused": self.refused, "failed": self.failed,
                "warnings": self.warnings, "seconds": self.seconds, "workers": self.workers,
                "images_per_s": self.images_per_s}


def make_client(workers: int | None = None, scheduler: str | None = None, threads_per_worker: int = 1):
    """A dask.distributed Client: to ``scheduler`` if given, else a LocalCluster of ``workers`` processes.

    Returns (client, owned) where ``owned`` says the caller should close it (and its cluster)."""
    from dask.distributed import Client, LocalCluster

    if scheduler:  # the address rules of remote sessions, and a connection that cannot wait forever
        from ..remote.client.addresses import check_address, open_client

        return open_client(check_address(scheduler), timeout=30), True
    cluster = LocalCluster(n_workers=int(workers or 2), threads_per_worker=threads_per_worker, processes=True,
                           dashboard_address=None)
    return Client(cluster), True


def close_client(client) -> None:
    """Close a client from :func:`make_client` and the LocalCluster it started."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def _record(report: BatchReport, res: dict, bar, on_result) -> None:
    report.add(res)
    bar.update(1)
    if on_result is not None:
        on_result(res)
    if res.get("disk_errno") is not None:  # the disk itself: every later item would fail the same way
        err = OSError(res["disk_errno"], res.get("strerror", ""))
        raise OutputNotWritableError(err.errno, disk_error_line(err, Path(res["output"]).parent, len(report.done)))


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
                _record(report, fn(item, job, model=model), bar, on_result)
            return
        from dask.distributed import as_completed

        if client is None:
            client, owned = make_client(workers, scheduler)
        n_workers = max(1, len(client.scheduler_info().get("workers", {})) or int(workers or 1))
        report.workers = n_workers
        if job.torch_threads is None:
            job = replace(job, torch_threads=max(1, (os.cpu_count() or 1) // n_workers))
        client.run(preload_worker, job)  # one model per worker process, loaded now; errors surface here, once
        futures = client.map(fn, items, job=job, pure=False)
        try:
            for fut in as_completed(futures):
                try:
                    res = fut.result()
                except Exception as err:  # a worker died: record the item, go on
                    item = items[futures.index(fut)]
                    res = {"input": item.input, "output": item.output, "index": item.index, "status": "failed",
                           "error": f"worker error: {type(err).__name__}: {err}"}
                _record(report, res, bar, on_result)
        except BaseException:
            client.cancel(futures)
            raise
    finally:
        bar.close()
        if owned:
            close_client(client)


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


def _status(f, out, status: str, index: int | None = None, **extra) -> dict[str, Any]:
    return {"input": str(f), "output": str(out), "index": index, "status": status, **extra}


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
    Finished outputs of the same job are skipped; failures and refused outputs (a file this tool did not
    write is in the way) are reported, not raised. Raises :class:`OutputNotWritableError` when an output
    folder cannot be written (before computing anything) or the disk fills up during the run, and
    :class:`PromptFileError` (before any image is read) when a prompt names an image not among the inputs.
    """
    t0 = time.perf_counter()
    files = expand_inputs(inputs, recursive=recursive)
    if not files:
        raise no_images_error(inputs, recursive)
    job = _resolved(job)
    report = BatchReport()
    per_image: dict[Path, list[Prompt]] = {}
    if job.mode == "prompts":
        per_image = check_prompt_images(read_prompts(job.prompts), files, job.prompts_base)
    roots = [Path(i).expanduser() for i in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    core = job.core()
    items, outputs = [], {}
    for f in files:
        root = next((r for r in roots if r.is_dir() and r in f.parents), None)
        out = labels_output_path(f, out_dir, root=root)
        if out in outputs:
            report.failed.append(_status(f, out, "failed", error=f"same output name as {outputs[out]}: rename "
                                                                  f"one of them"))
            continue
        outputs[out] = f
        prompts = tuple(per_image.get(f, ()))
        if job.mode == "prompts" and not prompts:
            report.skipped.append(_status(f, out, "skipped", reason="no prompts for this image"))
            continue
        if foreign_output(out, job.replace_foreign):
            report.refused.append(_status(f, out, "refused", error=refusal_message(out)))
            continue
        # tied to this input (path and content), not to the output's name: another folder's cells_000.tif
        # written into the same --out is a different job
        fp = fingerprint({**core, "source": str(f.resolve()), "source_digest": content_digest(f)}, prompts)
        if not job.overwrite and _finished(out, fp, f):
            report.skipped.append(_status(f, out, "skipped", reason="already finished"))
            continue
        items.append(Item(str(f), str(out), prompts, fp))
    check_writable(Path(it.output).parent for it in items)
    _execute(items, job, process_item, report, progress, "segment", client, workers, scheduler, model, on_result)
    report.seconds = time.perf_counter() - t0
    return report


def run_stack(path: str | os.PathLike, out_zarr: str | os.PathLike, job: Job, progress: bool = True,
              client=None, workers: int | None = None, scheduler: str | None = None, model=None,
              on_result: Callable[[dict], None] | None = None) -> BatchReport:
    """Segment every slice of a TIFF/zarr stack (N, H, W[, C]) into a zarr store (``labels`` (N, H, W)).

    Streams: each task reads one slice (dask/zarr chunk) and writes one chunk, so memory holds one slice per
    worker whatever the stack size. All slices share one intensity range (computed once from a strided
    sample of slices). Finished slices (``done`` flag) are skipped on a rerun of the same job. In prompts
    mode, prompt rows name the stack file and give ``slice`` (rows for another image are refused before any
    work, naming their line); slices without prompts are skipped.
    ``out_zarr`` must be new, empty, or a store this tool wrote: anything else is refused, never deleted.
    """
    t0 = time.perf_counter()
    path = Path(path)
    try:
        shape = stack_shape(path)
    except Exception as err:
        raise UnreadableImageError(f"{path}: cannot open as a stack ({type(err).__name__}: {err}); check that "
                                   f"the file opens in napari or Fiji, or export it again as TIFF") from err
    if not is_stack_shape(shape):
        raise ValueError(f"{path} has shape {shape}: one image, not a stack; use run_folder / "
                         f"`granseg segment {path} --out DIR`")
    job = _resolved(job)
    report = BatchReport()
    per_slice: dict[int, list[Prompt]] = {}
    if job.mode == "prompts":
        matched = check_prompt_images(read_prompts(job.prompts), [path], job.prompts_base)
        for p in matched.get(path, []):
            if p.slice is None or not 0 <= p.slice < shape[0]:
                raise PromptFileError(f"prompt {p} for stack {path.name} needs a slice in [0, {shape[0] - 1}] "
                                      f"(column 'slice' of the prompt file)")
            per_slice.setdefault(p.slice, []).append(p)
    core = {**job.core(), "source": str(path.resolve()), "source_stamp": file_stamp(path),
            "prompts": fingerprint({}, [p for s in sorted(per_slice) for p in per_slice[s]])}
    check_writable([Path(out_zarr).expanduser().absolute().parent])
    try:
        store = LabelsZarr(out_zarr, (shape[0],) + tuple(shape[1:3]), job=jsonable(core), overwrite=job.overwrite)
    except OSError as err:
        if isinstance(err, FileExistsError) or err.errno is None:
            raise
        raise OutputNotWritableError(err.errno, disk_error_line(err, out_zarr)) from err
    done = set(store.done_indices())
    items = []
    for i in range(shape[0]):
        prompts = tuple(per_slice.get(i, ()))
        if job.mode == "prompts" and not prompts:
            report.skipped.append(_status(path, out_zarr, "skipped", i, reason="no prompts for this slice"))
        elif i in done:
            report.skipped.append(_status(path, out_zarr, "skipped", i, reason="already finished"))
        else:
            items.append(Item(str(path), str(out_zarr), prompts, "", index=i))
    if items:  # one range for every slice, read from a few strided slices (never the whole stack)
        intensity = stack_intensity(path)
        items = [replace(it, intensity=intensity) for it in items]
    _execute(items, job, process_slice, report, progress, f"segment {path.name}", client, workers, scheduler,
             model, on_result)
    report.seconds = time.perf_counter() - t0
    return report


def _resolved(job: Job) -> Job:
    return replace(job, model=job.model.resolved(job.mode))

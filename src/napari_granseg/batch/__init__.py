"""Batch segmentation: the same segmentation on thousands of images or a stack larger than memory (napari-free).

Why this shape:

- A :class:`Job` is a small, picklable description (mode, granularity, precision, model *reference*,
  settings). Workers receive the job and a file path, load the model themselves once per process, read their
  input, write their output atomically and return a small status dict. Models, images and embeddings never
  travel between processes, so the same code runs in-process, on a ``dask.distributed`` LocalCluster, or on
  a real cluster given a scheduler address (with inputs and outputs on a shared file system).
- Resumable: an output is finished when it exists and carries the job's fingerprint (label TIFFs keep it in
  their description; zarr stores keep a per-slice ``done`` flag). A rerun skips finished items; a changed job
  (other granularity, precision, model or prompts) recomputes them.
- Safe: only files this tool wrote (they carry a granseg marker) are ever replaced; anything else at an
  output path is refused and kept. Output folders are probed before any image is computed. One failing item
  is recorded with its error and the run goes on; every write is atomic.

Modules: :mod:`.job` (ModelRef, Job, fingerprint, reference pairs), :mod:`.inputs` (files, folders, stack
slices), :mod:`.prompts` (prompt files), :mod:`.outputs` (markers, refusals, writability),
:mod:`.worker` (one item -> labels), :mod:`.runner` (report, local or dask execution).

Python use (also from the napari console)::

    from napari_granseg.batch import Job, ModelRef, run_folder, run_stack
    report = run_folder("images/", "labels/", Job(mode="prompts", prompts="prompts.csv", granularity=0.3))
    report = run_stack("big_stack.tif", "big_stack_labels.zarr", Job(mode="whole", granularity=0.5), workers=2)
    print(report.summary())
"""
from __future__ import annotations

from .inputs import Item, NoImagesError, expand_inputs, stack_intensity
from .job import MODES, Job, ModelRef, fingerprint, reference_pairs
from .outputs import OutputNotWritableError, OutputRefusedError, check_writable, is_granseg_labels
from .prompts import Prompt, PromptFileError, match_prompts, read_prompts
from .runner import BatchReport, close_client, make_client, run_folder, run_stack
from .worker import preload, process_item, process_slice, segment_image, segment_with_prompts, worker_model

__all__ = ["ModelRef", "Job", "Prompt", "PromptFileError", "BatchReport", "read_prompts", "match_prompts",
           "expand_inputs", "segment_image", "segment_with_prompts", "run_folder", "run_stack", "process_item",
           "process_slice", "worker_model", "preload", "make_client", "close_client", "MODES", "Item",
           "fingerprint", "reference_pairs", "stack_intensity", "NoImagesError", "OutputRefusedError",
           "OutputNotWritableError", "check_writable", "is_granseg_labels"]

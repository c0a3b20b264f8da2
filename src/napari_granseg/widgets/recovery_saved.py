"""Letting the recovery store go when a person saved a recorded Labels layer themselves (File > Save ...).

Why by comparing pixels: napari's save (File > Save Selected Layers / Save All Layers) sends no event that names
the layer or the file it wrote. What it does change is napari's "save history" setting (the folder of the file it
wrote). When that changes, the files of that folder written since a recorded layer's last write are read and
compared with the layer's pixels; an exact match means the person holds those labels in a file of their own, so
the layer's recovery entry is marked as ended normally: it is kept ``GRANSEG_RECOVERY_KEEP_DAYS`` after this
session, not the crash time. A later write to the layer takes that back (it holds unsaved labels again).

Nothing here changes napari: it only listens to a setting's event and reads the files napari wrote.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

__all__ = ["release_saved", "files_written_since", "SAVED_EXTENSIONS"]

log = logging.getLogger("napari_granseg.widgets")

#: what napari's own labels writer writes (and the console's ``np.save``): the files compared after a save
SAVED_EXTENSIONS = (".tif", ".tiff", ".npy", ".png")
#: a file's modification time may be this much older than the clock that stamped the entry (coarse file systems)
MTIME_SLACK_S = 2.0


def files_written_since(folder: str | os.PathLike, since: float) -> list[Path]:
    """Label files (:data:`SAVED_EXTENSIONS`) in ``folder`` modified at ``since`` or later (seconds)."""
    found = []
    try:
        with os.scandir(folder) as it:
            for item in it:
                if Path(item.name).suffix.lower() in SAVED_EXTENSIONS and item.is_file() \
                        and item.stat().st_mtime >= since - MTIME_SLACK_S:
                    found.append(Path(item.path))
    except OSError:
        return []
    return sorted(found)


def _read(path: Path) -> np.ndarray | None:
    """The pixels of a saved file, read as napari reads it; None when it cannot be read."""
    from napari_builtins.io import imread

    try:
        return np.asarray(imread(str(path)))
    except Exception:  # noqa: BLE001 - a file the person saved of another kind: simply not a match
        return None


def _same_pixels(saved: np.ndarray | None, labels: Any) -> bool:
    if saved is None or tuple(saved.shape) != tuple(labels.shape):
        return False
    return bool(np.array_equal(saved, np.asarray(labels)))  # napari may widen the dtype (uint32): values count


def release_saved(folder: str | os.PathLike, recorded: Iterable[tuple[Any, Any, str]],
                  flush: Callable[[Any], None] | None = None) -> list[str]:
    """Release the entries of ``recorded`` layers saved into ``folder``; returns their layer names.

    recorded: (labels layer, its RecoveryStore, its entry id) of this session's recorded layers; flush(layer):
    records the layer's pending hand edits first (they are in the saved file too).
    """
    released = []
    reads: dict[Path, np.ndarray | None] = {}
    for labels, store, eid in recorded:
        try:
            info = next((e for e in store.entries() if e.id == eid), None)
            if info is None or info.released:
                continue
            candidates = files_written_since(folder, info.updated)  # before a flush stamps a newer time
            if not candidates:
                continue
            if flush is not None:
                flush(labels)
            data = labels.data[0] if getattr(labels, "multiscale", False) else labels.data
            for path in candidates:
                if path not in reads:
                    reads[path] = _read(path)
                if _same_pixels(reads[path], data):
                    store.release([eid])
                    released.append(labels.name)
                    log.info("recovery: %r was saved as %s; its autosave is kept %g days after this session",
                             labels.name, path, store.settings.keep_days)
                    break
        except Exception as exc:  # noqa: BLE001 - noticing a save must never break napari's save
            log.warning("recovery: could not compare %r with what was saved: %s", getattr(labels, "name", "?"), exc)
    return released

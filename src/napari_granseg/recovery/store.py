"""The recovery store of one image: the labels the widgets wrote over it, kept on disk as they are written.

Why: a crash, a killed cluster job or an empty laptop battery must not take a person's committed labels with
it. Every write of a widget (commit, refine, propagation, segment-everything, few-shot) is also recorded here,
chunk by chunk and atomically (:mod:`.entry`), in a folder per image under the user's data dir
(:mod:`.settings`), found again by the image's file or content (:mod:`.keys`). Opening the same image later
offers what a session that is gone left behind.

Use::

    store = RecoveryStore.open_for("cells.tif", shape=(512, 512), dtype="int32")  # or open_for(array)
    store.record("granseg labels", (slice(10, 40), slice(20, 60)), block)       # only changed chunks
    store.recoverable()            # entries of sessions that are gone, newest first
    labels = store.restore("granseg labels")
    store.release()                # this session ended normally: kept keep_days more
    store.discard()                # forget everything of this image
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .entry import Entry, RecoveryError
from .files import read_json, write_json
from .keys import ImageKey, content_key, path_key
from .prune import STORE_INFO, PruneReport, prune, remove_folder
from .session import current_session, session_alive
from .settings import RecoverySettings

__all__ = ["RecoveryStore", "EntryInfo"]


@dataclass(frozen=True)
class EntryInfo:
    """What :meth:`RecoveryStore.entries` says about one entry (one labels layer of one session)."""

    id: str
    name: str
    shape: tuple[int, ...]
    dtype: str
    updated: float           # time of the last complete write (seconds since the epoch)
    writer: str              # what wrote last ("interactive commit", "propagation", ...)
    released: float | None   # when its session ended normally (None: it did not, or it still runs)
    alive: bool              # its session still runs (this one or another process)
    nbytes: int

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.updated))


class RecoveryStore:
    """The folder of one image in the recovery store (see the module docstring)."""

    def __init__(self, folder: Path, key: ImageKey, settings: RecoverySettings,
                 shape: tuple[int, ...] | None = None, dtype: Any = None, pruned: PruneReport | None = None):
        self.folder, self.key, self.settings = Path(folder), key, settings
        self.shape = None if shape is None else tuple(int(s) for s in shape)
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.pruned = pruned or PruneReport()
        self._lock = threading.RLock()
        self._open: dict[str, Entry] = {}       # entry id -> Entry (opened by this process)
        self._mine: dict[str, str] = {}         # layer name -> entry id written by this session

    @classmethod
    def open_for(cls, source: Any, shape: tuple[int, ...] | None = None, dtype: Any = None,
                 settings: RecoverySettings | None = None) -> "RecoveryStore":
        """The store of an image given by its file path (str/Path) or, without a file, its pixels (an array).

        ``shape``/``dtype``: of the labels recorded by default (``record`` may name others). Old entries of
        the whole store are pruned first (:func:`.prune.prune`).
        """
        settings = settings or RecoverySettings.from_env()
        if isinstance(source, (str, os.PathLike)):
            key = path_key(source, () if shape is None else shape, dtype)
        else:
            key = content_key(source)
        root = Path(settings.root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            report = prune(settings)
            folder = root / key.store_id
            folder.mkdir(exist_ok=True)
            if read_json(folder / STORE_INFO) is None:
                write_json(folder / STORE_INFO, {"key": key.ident, "kind": key.kind, "source": key.source,
                                                 "image_shape": list(key.shape), "image_dtype": key.dtype,
                                                 "created": time.time()}, settings.fsync)
        except OSError as exc:
            raise RecoveryError(f"recovery store: cannot use {root} ({exc.strerror or exc}); set "
                                f"GRANSEG_RECOVERY_DIR to a writable folder, or GRANSEG_RECOVERY=0 to turn "
                                f"autosave off") from exc
        return cls(folder, key, settings, shape, dtype, report)

    # ------------------------------------------------------------------ entries
    def _entry(self, entry_id: str) -> Entry:
        with self._lock:
            if entry_id not in self._open:
                entry = Entry.load(self.folder / entry_id, self.settings.fsync)
                if entry is None:
                    raise KeyError(f"no recovery entry {entry_id!r} in {self.folder}")
                self._open[entry_id] = entry
            return self._open[entry_id]

    def entries(self) -> list[EntryInfo]:
        """Every readable entry of this image, newest write first."""
        out = []
        for folder in (p for p in self.folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            m = read_json(folder / "manifest.json")  # from disk: another store object may have written it
            if m is None or m.get("format") != 1:
                continue
            out.append(EntryInfo(folder.name, str(m["name"]), tuple(m["shape"]), str(np.dtype(m["dtype"])),
                                 float(m["updated"]), str(m.get("writer", "")), m.get("released"),
                                 session_alive(m.get("session") or {}), int(m.get("bytes", 0))))
        return sorted(out, key=lambda e: -e.updated)

    def recoverable(self) -> list[EntryInfo]:
        """Entries left by sessions that are gone (crashed, killed, or ended normally), newest first."""
        return [e for e in self.entries() if not e.alive]

    def _find(self, name_or_id: str) -> str:
        if (self.folder / name_or_id).is_dir():
            return name_or_id
        named = [e for e in self.entries() if e.name == name_or_id]
        if not named:
            raise KeyError(f"no recovered labels named {name_or_id!r} for this image "
                           f"(there are: {[e.name for e in self.entries()]})")
        gone = [e for e in named if not e.alive]
        return (gone or named)[0].id

    # ------------------------------------------------------------------ writing
    def record(self, layer_name: str, region: Any, data: Any, writer: str = "", *,
               shape: tuple[int, ...] | None = None, dtype: Any = None, entry_id: str | None = None,
               source: Any = None, new_entry: bool = False) -> str:
        """Record ``data`` at ``region`` of the labels layer ``layer_name`` (see :meth:`.entry.Entry.record`).

        The first record of a layer in this session creates its entry, of ``shape``/``dtype`` (default: the
        store's). ``entry_id``: continue that entry (one this session created or adopted), whatever its name.
        ``source``: the whole labels array instead of ``data``: the region is read from it chunk by chunk.
        ``new_entry``: start a new entry even when this session already recorded a layer of that name (another
        layer that had the name before: its labels are kept apart).
        Returns the entry id. Raises :class:`RecoveryError` (its message says what to do) when it cannot.
        """
        with self._lock:
            eid = entry_id or (None if new_entry else self._mine.get(layer_name))
            if eid is None:
                shape = shape if shape is not None else self.shape
                dtype = dtype if dtype is not None else self.dtype
                if shape is None or dtype is None:
                    raise ValueError("recovery: the first record of a layer needs the labels' shape and dtype")
                entry = Entry.create(self.folder, layer_name, shape, dtype, writer, self.settings.fsync)
                self._open[entry.id] = entry
                eid = entry.id
            entry = self._entry(eid)
            if entry.name != layer_name:
                entry.update_manifest(name=str(layer_name))
            self._mine[layer_name] = eid
        entry.record(region, data, writer, source=source)
        return eid

    # ------------------------------------------------------------------ restoring and letting go
    def restore(self, name_or_id: str, out: Any = None, adopt: bool = False, new_name: str | None = None) -> Any:
        """The labels of an entry (by layer name: the newest of a session that is gone; or by id) as a new
        numpy array, or written into ``out`` (zero-filled, the entry's shape) chunk by chunk.

        ``adopt``: this session continues the entry (further records of ``new_name`` or its name go there).
        """
        entry = self._entry(self._find(name_or_id))
        if out is None:
            out = np.zeros(entry.shape, entry.dtype)
        elif tuple(out.shape) != entry.shape:
            raise ValueError(f"recovery: {entry.name!r} has shape {entry.shape}, not {tuple(out.shape)}")
        entry.read_into(out)
        if adopt:
            entry.adopt(new_name)
            with self._lock:
                self._mine[entry.name] = entry.id
        return out

    def release(self, entry_ids: Any = None) -> int:
        """This session ended normally (napari closed), or a layer's labels were saved: its entries (or only
        ``entry_ids``) are kept ``keep_days`` more (see :mod:`.prune`); a later write of an entry takes that
        back (it holds unsaved labels again). Returns how many entries were marked."""
        now, me, count = time.time(), current_session()["id"], 0
        with self._lock:
            for eid in set(self._mine.values()) if entry_ids is None else set(entry_ids):
                entry = self._entry(eid)
                if entry.info.get("session", {}).get("id") == me:
                    entry.update_manifest(released=now)
                    count += 1
        return count

    def discard(self, name_or_id: str | None = None) -> None:
        """Forget one entry (by layer name or id), or everything of this image (None)."""
        with self._lock:
            if name_or_id is None:
                self._open.clear()
                self._mine.clear()
                remove_folder(self.folder)
                return
            eid = self._find(name_or_id)
            self._open.pop(eid, None)
            self._mine = {k: v for k, v in self._mine.items() if v != eid}
            remove_folder(self.folder / eid)

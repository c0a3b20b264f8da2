"""Keeping the recovery store bounded: old sessions go, the whole store stays under its size limit.

Rules (settings in :mod:`.settings`): an entry of a session that ended normally (``released``) is removed
``keep_days`` after its last write; one of a session that did not (a crash) after ``crash_keep_days``; then,
while the store is larger than ``max_bytes``, whole sessions are removed, oldest last write first. Entries of a
session that still runs (this one, or another napari on this machine) are never removed.
"""
from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .entry import MANIFEST
from .files import read_json
from .session import session_alive
from .settings import RecoverySettings

__all__ = ["prune", "PruneReport", "remove_folder", "STORE_INFO"]

STORE_INFO = "store.json"
_DAY = 86400.0


@dataclass
class PruneReport:
    removed_entries: int = 0
    freed_bytes: int = 0
    total_bytes: int = 0
    #: a message when the live sessions alone are over the size limit
    warning: str = ""
    removed: list[str] = field(default_factory=list)


def remove_folder(folder: Path) -> None:
    """Remove ``folder``: first renamed to a hidden name (readers skip it at once), then deleted."""
    trash = folder.with_name(f".trash-{uuid.uuid4().hex[:8]}-{folder.name}")
    try:
        folder.rename(trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _entries(root: Path):
    """(store folder, entry folder, manifest) of every readable entry under ``root``."""
    for store in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for folder in sorted(p for p in store.iterdir() if p.is_dir() and not p.name.startswith(".")):
            manifest = read_json(folder / MANIFEST)
            if manifest is not None:
                yield store, folder, manifest


def prune(settings: RecoverySettings, now: float | None = None) -> PruneReport:
    """Apply the rules of the module docstring to ``settings.root``; returns what was removed."""
    root, report = Path(settings.root), PruneReport()
    if not root.is_dir():
        return report
    now = time.time() if now is None else now
    for leftover in root.glob("*/.trash-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    sessions: dict[str, list] = {}
    for store, folder, manifest in _entries(root):
        session = manifest.get("session") or {}
        alive = session_alive(session)
        age_days = (now - float(manifest.get("updated", 0))) / _DAY
        limit = settings.keep_days if manifest.get("released") else settings.crash_keep_days
        nbytes = int(manifest.get("bytes", 0))
        if not alive and age_days > limit:
            _remove(folder, nbytes, report)
            continue
        sessions.setdefault(session.get("id", folder.name), []).append((folder, manifest, alive, nbytes))
    total = sum(n for items in sessions.values() for *_, n in items)
    # whole sessions, oldest last write first; live ones stay
    order = sorted(sessions.values(), key=lambda items: max(float(m.get("updated", 0)) for _, m, _, _ in items))
    for items in order:
        if total <= settings.max_bytes:
            break
        if any(alive for _, _, alive, _ in items):
            continue
        for folder, _, _, nbytes in items:
            _remove(folder, nbytes, report)
            total -= nbytes
    report.total_bytes = total
    if total > settings.max_bytes:
        report.warning = (f"recovery store {root} holds {total / 2**20:.0f} MB of labels of running sessions, over "
                          f"its limit of {settings.max_bytes / 2**20:.0f} MB (GRANSEG_RECOVERY_MAX_MB): save your "
                          f"labels layers (File > Save Selected Layers) or raise the limit")
    for store in [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]:
        if not any(p.is_dir() and not p.name.startswith(".") for p in store.iterdir()):
            info = read_json(store / STORE_INFO) or {}
            if now - float(info.get("created", 0)) > _DAY:  # an image whose labels all went
                remove_folder(store)
    return report


def _remove(folder: Path, nbytes: int, report: PruneReport) -> None:
    remove_folder(folder)
    report.removed_entries += 1
    report.freed_bytes += nbytes
    report.removed.append(str(folder))

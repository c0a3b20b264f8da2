"""Autosave and crash recovery of the labels the widgets write (no napari, no Qt): see :mod:`.store`."""
from .entry import RecoveryDiskFull, RecoveryError
from .keys import ImageKey, content_key, path_key
from .prune import PruneReport, prune
from .settings import RecoverySettings
from .store import EntryInfo, RecoveryStore

__all__ = ["RecoveryStore", "EntryInfo", "RecoverySettings", "RecoveryError", "RecoveryDiskFull", "ImageKey",
           "path_key", "content_key", "prune", "PruneReport"]

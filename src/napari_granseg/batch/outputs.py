"""Where results go, and the rules that keep a user's files safe.

- Outputs carry a marker: label TIFFs keep ``granseg_fingerprint`` in their description, zarr stores a
  ``granseg`` attribute, the JSON report a ``granseg`` key. Only a file with our marker is ever replaced
  (``overwrite`` recomputes those); any other file at an output path is *refused* and left byte for byte as
  it was, unless the user names it in ``Job.replace_foreign`` (CLI ``--replace-foreign PATTERN``).
- Output folders are probed (a file written and removed) before any image is computed, so a read-only or
  missing disk is one clear line at the start, not a traceback after hours of work.
- Errors of the disk itself (full, read-only, quota) stop the run at the first item that meets them: every
  later write would fail the same way. Finished outputs are kept (every write is atomic).
"""
from __future__ import annotations

import errno
import fnmatch
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..io import atomic_write_bytes, read_labels_metadata

__all__ = ["OutputRefusedError", "OutputNotWritableError", "is_granseg_labels", "foreign_output",
           "refusal_message", "check_writable", "disk_error_line", "DISK_ERRNOS", "write_report"]

#: OS errors of the output disk itself: the same for every item, so the run stops at the first one.
DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}
_MARKER_KEY = "granseg_fingerprint"


class OutputRefusedError(FileExistsError):
    """An output path holds a file this tool did not write; it is kept and the item is not written."""


class OutputNotWritableError(OSError):
    """An output folder that cannot be written (read-only, full, missing permission)."""


def is_granseg_labels(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a label TIFF this tool wrote (its description carries our fingerprint)."""
    meta = read_labels_metadata(path)
    return bool(meta) and _MARKER_KEY in meta


def _named(path: Path, patterns: Sequence[str]) -> bool:
    full = str(path)
    return any(fnmatch.fnmatch(full, p) or fnmatch.fnmatch(path.name, p)
               or os.path.abspath(p) == os.path.abspath(full) for p in patterns)


def foreign_output(path: str | os.PathLike, replace_foreign: Sequence[str] = ()) -> bool:
    """True when ``path`` exists, was not written by this tool, and the user did not allow replacing it."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return False
    if path.is_file() and is_granseg_labels(path):
        return False
    return not (path.is_file() and _named(path, replace_foreign))


def refusal_message(path: str | os.PathLike) -> str:
    """The one line a refused output gets: what was kept and how to allow replacing it."""
    return (f"refused to replace {path}: it was not written by granseg (no granseg marker), so it is kept "
            f"unchanged; to replace it pass --replace-foreign {Path(path).name!r} (Python: "
            f"Job(replace_foreign=({Path(path).name!r},))), or write the results elsewhere with --out DIR")


def disk_error_line(err: OSError, where: str | os.PathLike, finished: int | None = None) -> str:
    """One clear line for an OS error of the output disk, with what to do (``finished``: outputs kept)."""
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
            errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied"}.get(err.errno, err.strerror or type(err).__name__)
    todo = ("free some space" if err.errno in (errno.ENOSPC, errno.EDQUOT)
            else "choose a writable folder with --out DIR (or fix its permissions)")
    kept = "finished outputs are kept" if finished is None else f"the {finished} output(s) finished so far are kept"
    return f"cannot write to {where}: {what}; {todo}, then rerun the same command ({kept})"


def check_writable(folders: Iterable[str | os.PathLike]) -> None:
    """Create each output folder and write + remove a probe file in it; raise one clear error if it fails."""
    for folder in dict.fromkeys(Path(f) for f in folders):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".granseg_probe_", dir=folder)
            try:
                os.write(fd, b"granseg")
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as err:
            raise OutputNotWritableError(err.errno, disk_error_line(err, folder)) from err


def write_report(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write the JSON run report atomically, never over a file that is not a granseg report."""
    path = Path(path)
    if path.exists():
        ours = False
        try:
            ours = isinstance(old := json.loads(path.read_text()), dict) and "granseg" in old
        except (OSError, ValueError):
            pass
        if not ours:
            raise OutputRefusedError(f"refused to write the report over {path}: it is not a granseg report, so it "
                                     f"is kept unchanged; pass --report NEWFILE")
    payload = {"granseg": {"report": 1}, **data}
    return atomic_write_bytes(path, json.dumps(payload, indent=1, default=str).encode())

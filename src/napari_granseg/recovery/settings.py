"""Where the recovery store lives and how long it keeps labels: one place, read from the environment.

Why environment variables: the store is written by the widgets, the console and tests alike, before any
widget exists; a variable set in the shell (or a test's ``monkeypatch.setenv``) reaches all of them.

- ``GRANSEG_RECOVERY_DIR``: the folder (default: the per-user data dir, e.g. ``~/.local/share/napari-granseg/
  recovery`` on Linux, ``~/Library/Application Support/napari-granseg/recovery`` on macOS,
  ``%LOCALAPPDATA%\\napari-granseg\\recovery`` on Windows).
- ``GRANSEG_RECOVERY``: ``0`` turns autosave off (nothing is written, nothing is offered).
- ``GRANSEG_RECOVERY_KEEP_DAYS``: days a session's labels are kept after it ended normally (napari was closed
  normally, or the person saved the layer with File > Save); default 7; 0 = removed at the next start.
- ``GRANSEG_RECOVERY_CRASH_KEEP_DAYS``: days the labels of a session that did NOT end normally (a crash, a
  killed job) are kept; default 30.
- ``GRANSEG_RECOVERY_MAX_MB``: size bound of the whole store; the oldest sessions are removed first; default 2048.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RecoverySettings", "default_root"]

APP_NAME = "napari-granseg"


def default_root() -> Path:
    """The per-user data folder of the plugin + ``recovery`` (platformdirs, a dependency of pooch)."""
    try:
        import platformdirs

        base = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    except ImportError:  # pragma: no cover - platformdirs comes with pooch
        base = Path.home() / ".local" / "share" / APP_NAME
    return base / "recovery"


def _number(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r}: set it to a number (e.g. {default:g})") from None
    if value < 0:
        raise ValueError(f"{name}={text!r}: must be 0 or more")
    return value


@dataclass(frozen=True)
class RecoverySettings:
    """The recovery store's settings (see the module docstring for the variables and defaults)."""

    root: Path
    enabled: bool = True
    keep_days: float = 7.0
    crash_keep_days: float = 30.0
    max_bytes: int = 2048 * 2**20
    #: flush every chunk and manifest to the disk before a write counts as done (a power cut keeps them too)
    fsync: bool = True

    @classmethod
    def from_env(cls) -> "RecoverySettings":
        root = os.environ.get("GRANSEG_RECOVERY_DIR", "").strip()
        enabled = os.environ.get("GRANSEG_RECOVERY", "1").strip().lower() not in ("0", "false", "no", "off")
        return cls(root=Path(root).expanduser() if root else default_root(), enabled=enabled,
                   keep_days=_number("GRANSEG_RECOVERY_KEEP_DAYS", 7.0),
                   crash_keep_days=_number("GRANSEG_RECOVERY_CRASH_KEEP_DAYS", 30.0),
                   max_bytes=int(_number("GRANSEG_RECOVERY_MAX_MB", 2048.0) * 2**20))

"""Who wrote an entry: this process's session, and whether the session that wrote an entry still runs.

Why: two napari windows may open the same image; each writes its own entries, and only the entries of a
session that is gone (crashed, killed, or ended normally) are offered for restoring. A process is recognised by
its id AND its start time, so a new process that got the same id after a reboot is not mistaken for it.
"""
from __future__ import annotations

import functools
import os
import socket
import time
import uuid

__all__ = ["current_session", "session_alive"]


def _process_start(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # noqa: BLE001 - psutil missing, no such process or no permission
        return None


@functools.lru_cache(maxsize=1)
def current_session() -> dict:
    """This process's session: ``id`` (unique), ``pid``, ``started`` (the process's start time), ``host``."""
    pid = os.getpid()
    return {"id": f"{time.strftime('%Y%m%d-%H%M%S')}-{pid}-{uuid.uuid4().hex[:6]}", "pid": pid,
            "started": _process_start(pid), "host": socket.gethostname()}


def session_alive(session: dict) -> bool:
    """True when ``session`` is this process's or another process of this machine that still runs."""
    me = current_session()
    if session.get("id") == me["id"]:
        return True
    if session.get("host") != me["host"]:
        return False  # a store on a shared home: a session of another machine is not ours to judge; treat as gone
    pid, started = session.get("pid"), session.get("started")
    if not isinstance(pid, int):
        return False
    now_started = _process_start(pid)
    if now_started is None:
        return False
    return started is None or abs(now_started - float(started)) < 1.0

"""The "compute" setting every widget shares: run the model on this machine or on a GPU machine through a dask
scheduler (docs/remote.md).

Why one module: connecting and the messages of a refused or lost connection are the same in every widget
(building a predictor or a few-shot segmenter "here or there" is :mod:`napari_granseg.compute`'s, which the
widgets' jobs call). The API is small on purpose:

``ComputeSetting(on_change=None, on_error=None)``
    the control row (``.row``: an editable address box + a Connect button, both with tooltips) and its state.
    ``.session`` is None for "this machine", else the connected ``remote.RemoteSession``; ``.connecting`` is
    True while a worker connects (never on the GUI thread). ``apply(text=None)`` switches to what the box
    says (or ``text``); ``on_change(session)`` runs on the GUI thread once the switch is done,
    ``on_error(message)`` with the user-facing message when connecting failed (the setting then stays where
    it was). ``last_error`` keeps that message.
``is_compute_error(exc)`` / ``compute_error_text(exc)``
    whether ``exc`` is a refused address or a lost/unreachable worker, and the text to show (its message: it
    already says what to do and that local labels are unchanged) — never a traceback.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

__all__ = ["LOCAL", "COMPUTE_TIP", "ComputeSetting", "is_compute_error", "compute_error_text"]

log = logging.getLogger(__name__)

#: the box's entry for running here
LOCAL = "this machine"
COMPUTE_TIP = ("where the model runs: 'this machine', or the address of a dask scheduler on a GPU machine, e.g. "
               "tcp://127.0.0.1:8786 through an SSH tunnel (docs/remote.md has the SSH tunnel and TLS recipes). "
               "Plain tcp:// to another machine is refused: anyone reaching that port could run code there")


#: the errors of a refused address or an unreachable/lost worker, named rather than imported (the remote
#: package imports dask: telling them apart must not import it on napari's GUI thread)
_COMPUTE_ERRORS = frozenset({"RemoteError", "InsecureAddressError"})


def is_compute_error(exc: BaseException) -> bool:
    """True for a refused address or an unreachable/lost worker (a message for the user, not a bug)."""
    return any(cls.__module__.startswith("napari_granseg.remote") and cls.__qualname__ in _COMPUTE_ERRORS
               for cls in type(exc).__mro__)


def compute_error_text(exc: BaseException) -> str:
    """What the user reads for a compute error (the message already says what to do)."""
    return str(exc)


def _connect(text: str):
    from .. import remote

    return remote.connect(text)


class ComputeSetting:
    """The compute row and its state (see the module docstring)."""

    def __init__(self, on_change: Callable[[Any], None] | None = None,
                 on_error: Callable[[str], None] | None = None):
        from qtpy.QtWidgets import QComboBox, QHBoxLayout, QPushButton, QWidget

        from ._tasks import BackgroundTask

        self.on_change, self.on_error = on_change, on_error
        self._task = BackgroundTask(context="Connecting")
        self.session = None
        self.connecting = False
        self.last_error = ""
        self.row = QWidget()
        layout = QHBoxLayout(self.row)
        layout.setContentsMargins(0, 0, 0, 0)
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.combo.addItem(LOCAL)
        self.combo.setToolTip(COMPUTE_TIP)
        self.connect_button = QPushButton("Connect")
        self.connect_button.setToolTip("use the compute written on the left (connecting runs in the background)")
        self.connect_button.clicked.connect(lambda: self.apply())
        layout.addWidget(self.combo, 1)
        layout.addWidget(self.connect_button)

    @property
    def is_remote(self) -> bool:
        return self.session is not None

    @property
    def address(self) -> str | None:
        return None if self.session is None else self.session.address

    def apply(self, text: str | None = None) -> None:
        """Switch to ``text`` (default: the box's text): "this machine" at once, an address in a worker."""
        text = (self.combo.currentText() if text is None else text).strip() or LOCAL
        self.combo.setCurrentText(text)
        if text == LOCAL:
            self.session = None
            self._changed()
            return
        self.connecting = True
        self.connect_button.setEnabled(False)
        self._task.start(lambda _is_cancelled: _connect(text), on_done=self._connected, on_error=self._failed)

    def _connected(self, session) -> None:
        self.connecting = False
        self.connect_button.setEnabled(True)
        self.session = session
        self.last_error = ""
        if self.combo.findText(session.address) < 0:
            self.combo.addItem(session.address)
        self._changed()

    def _failed(self, exc: BaseException) -> None:
        self.connecting = False
        self.connect_button.setEnabled(True)
        if is_compute_error(exc) or isinstance(exc, ValueError):
            self.last_error = compute_error_text(exc)
        else:
            log.error("napari-granseg: connecting failed", exc_info=exc)
            self.last_error = f"could not connect: {type(exc).__name__}: {exc}"
        self.combo.setCurrentText(LOCAL if self.session is None else self.session.address)
        if self.on_error is not None:
            self.on_error(self.last_error)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.session)

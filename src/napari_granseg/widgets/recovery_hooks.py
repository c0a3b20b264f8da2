"""The widgets' side of crash recovery: one call where a widget writes labels, one row that offers them back.

Why one module: every widget that writes a Labels layer (commit, refine, propagation, segment everything,
few-shot) calls :func:`record_write` right after the write and before it reports it done, so the pixels are on
disk (:mod:`napari_granseg.recovery`) when the person reads "committed". :class:`RestoreOffer` is the row a
widget adds to its dock: when an image whose labels a gone session left behind is open, it shows
"Restore ..." (and "Forget"); one click adds them back as Labels layers named as before (a suffix when the name
is taken: no layer is replaced), and the status line says what came back and from when.

Recording never fails a widget's action: when the store cannot keep an edit (disk full, size limit, a folder
that is not writable) the person is warned once, and the labels stay in the layer as always.
"""
from __future__ import annotations

import logging
import time
import weakref
from typing import Any, Callable, Sequence

import numpy as np
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ..recovery import RecoveryError, RecoverySettings, RecoveryStore
from .interactive.prompt_layers import unwrap

__all__ = ["record_write", "store_for", "release_all", "saved_by_napari", "RestoreOffer"]

log = logging.getLogger("napari_granseg.widgets")

# image layer -> its store; labels layer -> (store, entry id): the only state of this module
_STORES: "weakref.WeakKeyDictionary[Any, RecoveryStore]" = weakref.WeakKeyDictionary()
_ENTRIES: "weakref.WeakKeyDictionary[Any, tuple[RecoveryStore, str]]" = weakref.WeakKeyDictionary()
_WARNED: set[str] = set()


def _source_path(layer) -> str | None:
    path = getattr(getattr(layer, "source", None), "path", None)
    return str(path) if path else None


def _level0(layer):
    data = layer.data
    return data[0] if getattr(layer, "multiscale", False) else data


def store_for(image_layer, settings: RecoverySettings | None = None) -> RecoveryStore | None:
    """The recovery store of ``image_layer`` (by its file, else its content); None when autosave is off."""
    settings = settings or RecoverySettings.from_env()
    if not settings.enabled:
        return None
    layer = unwrap(image_layer)
    store = _STORES.get(layer)
    if store is None or store.settings.root != settings.root:
        path = _source_path(layer)
        try:
            store = RecoveryStore.open_for(path, settings=settings) if path else None
        except ValueError:  # the file is gone: the pixels are the key
            store = None
        if store is None:
            store = RecoveryStore.open_for(_level0(layer), settings=settings)
        _STORES[layer] = store
        if store.pruned.warning:
            _warn(store.pruned.warning)
    return store


def _warn(text: str) -> str:
    log.warning("%s", text)
    if text not in _WARNED:
        _WARNED.add(text)
        from ._common import notify

        notify("warning", text)
    return text


def _bbox(where: np.ndarray) -> tuple[slice, ...] | None:
    """The bounding box of the True pixels of ``where`` (None when there are none)."""
    where = np.asarray(where, bool)
    spans = []
    for axis in range(where.ndim):
        hit = np.flatnonzero(np.any(where, axis=tuple(a for a in range(where.ndim) if a != axis)))
        if hit.size == 0:
            return None
        spans.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(spans)


def record_write(image_layer, labels_layer, index: Sequence[int] = (), where: Any = None, writer: str = "",
                 viewer: Any = None) -> str:
    """Record what a widget just wrote into ``labels_layer`` over ``image_layer``; returns a warning or "".

    image_layer: the layer, or its name in ``viewer``'s layers (a removed image: nothing is recorded).
    index: the slice written (leading indices; () = the whole layer, read chunk by chunk); where: a boolean
    mask of that slice bounding what changed (None = the whole slice). Only chunks whose content changed are
    written, so a commit costs about its object's bytes, whatever the stack's size.
    """
    if isinstance(image_layer, str):
        if viewer is None or image_layer not in viewer.layers:
            log.warning("recovery: image %r is gone; %r is not autosaved", image_layer, labels_layer.name)
            return ""
        image_layer = viewer.layers[image_layer]
    region: tuple = tuple(int(i) for i in index)
    if where is not None:
        box = _bbox(where)
        if box is None:
            return ""
        region += box
    return _record_region(image_layer, labels_layer, region, writer)


def _record_region(image_layer, labels_layer, region: tuple, writer: str) -> str:
    """Record ``region`` (ints and slices; () = all) of ``labels_layer``; never raises (see record_write)."""
    if image_layer is None:
        return ""
    try:
        store = store_for(image_layer)
        if store is None:
            return ""
        labels = unwrap(labels_layer)
        data = _level0(labels)
        known = _ENTRIES.get(labels)
        eid = known[1] if known is not None and known[0] is store else None
        shape, dtype = tuple(int(s) for s in data.shape), np.dtype(data.dtype)
        eid = store.record(labels.name, region, None, writer, shape=shape, dtype=dtype, entry_id=eid,
                           new_entry=eid is None,  # a layer not recorded before: its own entry
                           source=data)  # read chunk by chunk: a zarr/dask stack is never read whole
        _ENTRIES[labels] = (store, eid)
        _follow_hand_edits(image_layer, labels)
        _FOLLOWED[labels].recorded(region, shape)
        return ""
    except RecoveryError as exc:
        return _warn(str(exc))
    except Exception as exc:  # noqa: BLE001 - autosave must never break the widget's own write
        log.error("napari-granseg: recording labels for crash recovery failed", exc_info=exc)
        return _warn(f"autosave of {getattr(labels_layer, 'name', 'labels')!r} failed ({type(exc).__name__}: "
                     f"{exc}); the labels are in the layer: save it (File > Save Selected Layers)")


#: hand edits (brush, fill, eraser) of a recorded layer are recorded this long after the last stroke
HAND_EDIT_DELAY_MS = 1000


def _edit_box(atom: Any, ndim: int) -> tuple[slice, ...] | None:
    """The bounding box of one napari history atom: a masked paint (``slice_key``) or (indices, old, new)."""
    key = getattr(atom, "slice_key", None)
    if key is not None:
        return tuple(key)
    indices = atom[0]
    if len(indices) != ndim:
        return None
    box = []
    for ix in indices:
        ix = np.asarray(ix)
        if ix.size == 0:
            return ()
        box.append(slice(int(ix.min()), int(ix.max()) + 1))
    return tuple(box)


class _HandEdits:
    """Follows a recorded Labels layer's own edits (napari's ``paint`` event: brush, fill, eraser strokes and
    the widgets' writes) and records their bounding box a moment after the last one (what a widget writes is
    recorded at once by its own call; that second record finds nothing changed and writes nothing)."""

    def __init__(self, image_layer, labels):
        from qtpy.QtCore import QTimer

        self._image, self._labels = weakref.ref(unwrap(image_layer)), weakref.ref(labels)
        self._box: list[list[int]] | None = None
        self.timer = QTimer()
        self.timer.setSingleShot(True)
        self.timer.setInterval(HAND_EDIT_DELAY_MS)
        self.timer.timeout.connect(self.flush)
        labels.events.paint.connect(self._painted)

    def _painted(self, event) -> None:
        labels = self._labels()
        if labels is None:
            return
        ndim = len(_level0(labels).shape)
        for atom in event.value or ():
            try:
                box = _edit_box(atom, ndim)
            except (TypeError, ValueError, IndexError):
                box = None
            if box == ():
                continue
            if box is None:  # an edit of an unknown form: the whole layer (only changed chunks are written)
                box = tuple(slice(0, n) for n in _level0(labels).shape)
            spans = [[b.start, b.stop] for b in box]
            self._box = spans if self._box is None else [
                [min(a[0], b[0]), max(a[1], b[1])] for a, b in zip(self._box, spans)]
        if self._box is not None:
            self.timer.start()

    def recorded(self, region: tuple, shape: tuple[int, ...]) -> None:
        """``region`` was just recorded: edits seen so far that lie inside it need no second record."""
        if self._box is None:
            return
        spans = []
        for axis, n in enumerate(shape):
            r = region[axis] if axis < len(region) else slice(0, n)
            spans.append((r.start, r.stop) if isinstance(r, slice) else (int(r), int(r) + 1))
        if all(a <= lo and hi <= b for (a, b), (lo, hi) in zip(spans, self._box)):
            self._box = None
            self.timer.stop()

    def flush(self) -> None:
        """Record the edits seen since the last flush (at once, e.g. before napari closes)."""
        image, labels, box = self._image(), self._labels(), self._box
        self._box = None
        if image is None or labels is None or box is None:
            return
        _record_region(image, labels, tuple(slice(a, b) for a, b in box), "hand edit")


_FOLLOWED: "weakref.WeakKeyDictionary[Any, _HandEdits]" = weakref.WeakKeyDictionary()


def _follow_hand_edits(image_layer, labels) -> None:
    if labels not in _FOLLOWED and hasattr(getattr(labels, "events", None), "paint"):
        _FOLLOWED[labels] = _HandEdits(image_layer, labels)


def release_all() -> int:
    """This session ends normally: every store it wrote keeps its entries ``keep_days`` more; returns count."""
    for follower in list(_FOLLOWED.values()):
        follower.flush()
    count = 0
    for store in list(_STORES.values()):
        try:
            count += store.release()
        except (OSError, RecoveryError) as exc:  # pragma: no cover - a store folder removed meanwhile
            log.warning("recovery: could not mark %s as ended normally: %s", store.folder, exc)
    return count


_QUIT_CONNECTED = []  # the application's aboutToQuit is connected once


def _connect_quit() -> None:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    if app is not None and not _QUIT_CONNECTED:
        app.aboutToQuit.connect(release_all)
        _QUIT_CONNECTED.append(app)


#: napari's File menu commands that save layers (their QActions are followed, see :mod:`.recovery_saved`)
SAVE_COMMANDS = ("napari.window.file.save_layers_dialog.selected", "napari.window.file.save_layers_dialog")
_SAVES_FOLLOWED: "weakref.WeakSet[Any]" = weakref.WeakSet()  # the QActions already followed


def saved_by_napari(folder: Any = None) -> list[str]:
    """napari just saved layers (File > Save ...): release the recorded layers now held in a file of their own
    (compared pixel by pixel with the files written since their last write in ``folder``, by default napari's
    last save folder; from the console, after ``viewer.layers.save(path)``, pass the folder); returns their names."""
    from napari.settings import get_settings

    from .recovery_saved import release_saved

    folders = [folder] if folder is not None else list(get_settings().application.save_history or ())
    if not folders:
        return []
    return release_saved(folders[0], [(layer, store, eid) for layer, (store, eid) in list(_ENTRIES.items())],
                         flush=lambda layer: _FOLLOWED[layer].flush() if layer in _FOLLOWED else None)


def _follow_saves(viewer) -> None:
    """Run :func:`saved_by_napari` after napari's own save commands of ``viewer``'s File menu (a signal of
    napari's menu actions, connected after napari's: the save has finished when it runs)."""
    menu = getattr(getattr(viewer, "window", None), "file_menu", None)
    for command in SAVE_COMMANDS if menu is not None else ():
        action = menu.findAction(command)
        if action is not None and action not in _SAVES_FOLLOWED:
            action.triggered.connect(lambda *_: saved_by_napari())
            _SAVES_FOLLOWED.add(action)


class RestoreOffer(QWidget):
    """"Restore ..." and "Forget" buttons, shown while an open image has labels a gone session left behind.

    ``status``: the widget's status line (a QLabel) that also says what was restored, or ``say``: a function
    given that text (for a widget that rebuilds its status line itself); ``message`` (this row's own line)
    keeps saying it.
    """

    def __init__(self, viewer, status: QLabel | None = None, say: Callable[[str], Any] | None = None,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer, self._status, self._say_to = viewer, status, say
        self._offers: list[tuple[Any, RecoveryStore, list]] = []
        self.restore_button = QPushButton("Restore")
        self.forget_button = QPushButton("Forget")
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setVisible(False)  # shown once there is something to say
        self.restore_button.setToolTip("add back the labels a previous napari session wrote over this image "
                                       "(it ended without saving them, or they are kept a few days after)")
        self.forget_button.setToolTip("delete those recovered labels from the recovery store")
        row = QHBoxLayout()
        row.addWidget(self.restore_button, 1)
        row.addWidget(self.forget_button)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addLayout(row)
        outer.addWidget(self.message)
        self.restore_button.clicked.connect(self.restore)
        self.forget_button.clicked.connect(self.forget)
        self.viewer.layers.events.inserted.connect(self._layers_changed)
        self.viewer.layers.events.removed.connect(self._layers_changed)
        _connect_quit()
        _follow_saves(viewer)
        self.refresh()

    def _layers_changed(self, _event=None) -> None:
        try:
            self.refresh()
        except RuntimeError:  # pragma: no cover - the dock was closed while the event was queued
            pass

    def refresh(self) -> None:
        """Look for recoverable labels of the open images; show the buttons when there are some."""
        from napari.layers import Image

        offers = []
        for layer in list(self.viewer.layers):
            if not isinstance(unwrap(layer), Image):
                continue
            try:
                store = store_for(layer)
                entries = [] if store is None else store.recoverable()
            except (RecoveryError, OSError, ValueError) as exc:  # the message says what to do
                self._say(str(exc), status=False)
                continue
            except Exception as exc:  # noqa: BLE001 - looking for old labels must never break adding a layer
                log.error("napari-granseg: looking for recovered labels of %r failed", layer.name, exc_info=exc)
                continue
            if entries:
                offers.append((layer, store, entries))
        self._offers = offers
        entries = [e for _, _, group in offers for e in group]
        for b in (self.restore_button, self.forget_button):
            b.setVisible(bool(entries))
        if entries:
            newest = max(entries, key=lambda e: e.updated)
            what = f"'{entries[0].name}'" if len(entries) == 1 else f"{len(entries)} labels layers"
            self.restore_button.setText(f"Restore {what} from {newest.when}…")
            self.restore_button.setToolTip("\n".join(
                f"{e.name} over {layer.name!r}: last written {e.when} by {e.writer or 'a widget'}"
                + (" (session ended normally)" if e.released else " (session did not end normally)")
                for layer, _, group in offers for e in group))

    def restore(self) -> list:
        """Add every offered entry back as a Labels layer over its image; returns the new layers."""
        from ._common import unique_layer_name
        from ._layer_pixels import LARGE_LABELS_BYTES, new_labels_array

        added, said = [], []
        for layer, store, entries in self._offers:
            for e in entries:
                name = unique_layer_name(self.viewer, e.name)
                nbytes = int(np.prod(e.shape, dtype=np.int64)) * np.dtype(e.dtype).itemsize
                out = np.zeros(e.shape, e.dtype) if nbytes <= LARGE_LABELS_BYTES else \
                    new_labels_array(e.shape, name)[0]
                data = store.restore(e.id, out=out, adopt=True, new_name=name)
                nd = len(e.shape)
                new = self.viewer.add_labels(data, name=name, scale=layer.scale[-nd:], translate=layer.translate[-nd:])
                _ENTRIES[unwrap(new)] = (store, e.id)
                _follow_hand_edits(layer, unwrap(new))
                added.append(new)
                said.append(f"'{name}' over '{layer.name}' (last written {e.when} by {e.writer or 'a widget'})")
        text = ("restored " + "; ".join(said)) if said else "nothing to restore"
        self._say(text)
        self.refresh()
        return added

    def forget(self) -> int:
        """Delete the offered entries from the recovery store; returns how many."""
        count = 0
        for _, store, entries in self._offers:
            for e in entries:
                store.discard(e.id)
                count += 1
        self._say(f"forgot {count} recovered labels layer(s)")
        self.refresh()
        return count

    def _say(self, text: str, status: bool = True) -> None:
        self.message.setText(f"{time.strftime('%H:%M')}: {text}")
        self.message.setVisible(True)
        if not status:
            return
        if self._say_to is not None:
            self._say_to(text)
        elif self._status is not None:
            self._status.setText(text)

"""The interactive session without Qt or napari: a synchronous job runner, a timer without delay and a layer
port over numpy arrays. The whole cycle a person runs (click -> slider -> commit -> undo -> propagate) on the
bundled demo UnSAMv2 and a synthetic two-cell stack: the committed label lands on the clicked cell, not on its
neighbour. The same test body runs with the model on this machine and on a dask worker (the session's
LocalCluster); both give the same labels.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest

from napari_granseg.synthetic import nested_cells_stack
from napari_granseg.widgets.interactive.image_source import channel_choices
from napari_granseg.widgets.interactive.ports import ImageInfo, ImmediateTimer, Prompts, SyncRunner
from napari_granseg.widgets.interactive.session import InteractiveSession
from napari_granseg.widgets.interactive.writes import object_write, propagation_writes


def _iou(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


class ArrayLayers:
    """A layer port over numpy arrays: images, clicks per slice, a preview and labels with an undo history."""

    def __init__(self, images: dict[str, np.ndarray]):
        self.images = dict(images)
        self.labels: dict[str, np.ndarray] = {}
        self.history: list[tuple[str, np.ndarray]] = []
        self.redo_stack: list[tuple[str, np.ndarray]] = []
        self.points: list[tuple[tuple[float, ...], bool]] = []
        self.attached: str | None = None
        self.index: tuple[int, ...] = ()
        self.preview: np.ndarray | None = None
        self.mode = "click"
        self._listeners: list[Callable[[], None]] = []

    def bind(self, on_prompts_changed):
        self._listeners.append(on_prompts_changed)

    def _changed(self):
        for fn in self._listeners:
            fn()

    def image(self, name):
        data = self.images.get(name) if name else None
        return None if data is None else ImageInfo(name, data, tuple(data.shape))

    def layer_data(self, names):
        return [self.images[n] for n in names if n in self.images]

    def channel_choices(self, name):
        return channel_choices(SimpleNamespace(name=name, data=self.images[name], rgb=False, multiscale=False))

    def current_index(self, name):
        return self.index if self.images[name].ndim == 3 else ()

    def check_view(self):
        pass

    def prompts_image(self):
        return self.attached

    def attach(self, name):
        if name != self.attached:
            self.points = []
        self.attached = name

    def read_prompts(self, index, hw):
        on = [(c[len(index):], pos) for c, pos in self.points if tuple(int(round(v)) for v in c[:len(index)]) == index]
        xy = np.array([[c[-1], c[-2]] for c, _ in on], np.float32).reshape(-1, 2)
        return Prompts(xy, np.array([int(p) for _, p in on], np.int32), None, 0)

    def prompt_count(self):
        return len(self.points)

    def add_point(self, coords, positive):
        self.points.append((tuple(coords), bool(positive)))
        self._changed()

    def clear_prompts(self, index):
        self.points = [(c, p) for c, p in self.points if tuple(int(round(v)) for v in c[:len(index)]) != index]
        self._changed()

    def activate(self, mode):
        self.mode = mode

    def click_target(self):
        return None

    def show_preview(self, mask):
        self.preview = np.asarray(mask).copy()

    def clear_preview(self):
        self.preview = None

    def labels_region(self, name, index):
        data = self.labels.get(name) if name else None
        return None if data is None else (data[index] if index else data)

    def target_labels(self, image, name, shape):
        name = name or "granseg labels"
        self.labels.setdefault(name, np.zeros(shape, np.int32))
        assert self.labels[name].shape == tuple(shape)
        return name

    def _record(self, name):
        self.history.append((name, self.labels[name].copy()))
        self.redo_stack.clear()

    def write_object(self, labels, index, mask, refine_label):
        data = self.labels[labels]
        region = data[index] if index else data
        plan = object_write(region, mask, refine_label, int(data.max()), data.dtype, labels)
        self._record(labels)
        region[plan.drop] = 0
        region[plan.write] = plan.label_id
        return plan.label_id, plan.n_pixels

    def write_propagation(self, labels, result, label_id, committed_slice):
        self._record(labels)
        writes = list(propagation_writes(result, self.labels[labels], label_id, committed_slice))
        for t, write in writes:
            self.labels[labels][t][write] = label_id
        return len(writes)

    def can_undo(self, labels):
        return any(n == labels for n, _ in self.history)

    def undo(self, labels):
        name, before = self.history.pop()
        self.redo_stack.append((name, self.labels[name].copy()))
        self.labels[name] = before

    def redo(self, labels):
        name, after = self.redo_stack.pop()
        self.history.append((name, self.labels[name].copy()))
        self.labels[name] = after


def _session(images) -> tuple[InteractiveSession, ArrayLayers]:
    layers = ArrayLayers(images)
    session = InteractiveSession(layers, task_runner=SyncRunner(), preview_runner=SyncRunner(),
                                 model_runner=SyncRunner(), debounce=ImmediateTimer)
    return session, layers


@pytest.fixture(scope="module")
def two_cells():
    return nested_cells_stack(n_slices=5, size=128, seed=20_010, drift=2.0, n_cells=2)


def run_cycle(session: InteractiveSession, layers: ArrayLayers, stack, scenes) -> np.ndarray:
    """What a person does, asserting what they would see at each step; returns the final labels."""
    events = []
    session.changed.connect(lambda st: events.extend(e.kind for e in st.events))
    session.set_image("stack")
    session.attach()
    layers.index = (2,)
    cell, other = scenes[2].masks[2]
    nucleolus = scenes[2].masks[0][0]
    row, col = scenes[2].centers[0]

    session.set_granularity(0.1)                     # click on the nucleolus at a fine granularity
    session.add_prompt((row, col))
    small = layers.preview.astype(bool)
    assert small[int(round(row)), int(round(col))] and "preview" in events
    assert _iou(small, nucleolus) > _iou(small, cell)
    assert "C commits it as a new label" in session.state.status and session.state.can_commit

    session.set_granularity(1.0)                     # the slider: the whole cell
    big = layers.preview.astype(bool)
    assert _iou(big, cell) > 0.8 and _iou(big, other) < 0.05 and big.sum() > 3 * small.sum()
    assert session.preview.ready and session.preview.shown.granularity == 1.0

    assert session.commit() == 1                     # commit: label 1 on the clicked cell, slice 2 only
    labels = layers.labels["granseg labels"]
    np.testing.assert_array_equal(labels[2] == 1, big)
    assert not labels[[0, 1, 3, 4]].any() and layers.preview is None and layers.prompt_count() == 0
    assert session.last_commit.label_id == 1 and session.last_commit.index == (2,)
    assert "committed label 1" in session.state.status and "Ctrl+Z undoes it" in session.state.status

    session.undo()                                   # undo: nothing left; redo brings it back
    assert not layers.labels["granseg labels"].any() and not session.state.can_undo
    session.redo()
    assert (layers.labels["granseg labels"][2] == 1).sum() == big.sum()

    assert session.state.can_propagate
    session.propagate()                              # through the stack: the clicked cell on every slice
    labels = layers.labels["granseg labels"]
    np.testing.assert_array_equal(labels[2] == 1, big)   # the committed slice stays as committed
    for z in range(len(stack)):
        clicked, neighbour = scenes[z].masks[2]
        assert _iou(labels[z] == 1, clicked) > 0.8, z
        assert (labels[z][neighbour] == 1).mean() < 0.05, z
    assert "propagated into 4 more slices" in session.state.status
    assert events.count("committed") == 1 and events.count("propagated") == 1
    session.undo()                                   # one undo step removes the whole propagation
    assert not layers.labels["granseg labels"][[0, 1, 3, 4]].any()
    session.redo()
    return layers.labels["granseg labels"].copy()


@pytest.fixture(scope="module")
def local_labels(two_cells, demo_unsamv2):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)   # as on the dask worker: identical float reductions
    try:
        stack, scenes = two_cells
        session, layers = _session({"stack": stack})
        session.set_precision("fp32")
        session.use_model(demo_unsamv2)
        assert session.models.state.phase == "ready" and session.models.state.where is None
        return run_cycle(session, layers, stack, scenes)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("where", ["local", "remote"])
def test_click_slider_commit_undo_propagate(where, request, two_cells, local_labels):
    """One body for both: only where the model runs differs; the labels are identical."""
    if where == "local":
        labels = local_labels
    else:
        from napari_granseg import remote

        cluster = request.getfixturevalue("cluster")
        stack, scenes = two_cells
        session, layers = _session({"stack": stack})
        session.set_precision("fp32")
        session.switch_compute(remote.connect(cluster.scheduler_address, timeout=30), "unsamv2-demo")
        model = session.models.state
        assert model.phase == "ready" and model.where is not None and model.is_demo, model
        assert "DEMO" in model.banner and "GPU worker" in model.banner
        labels = run_cycle(session, layers, stack, scenes)
    assert set(np.unique(labels)) == {0, 1}
    np.testing.assert_array_equal(labels, local_labels)


def test_a_failed_load_and_user_mistakes_are_messages_in_the_state(two_cells):
    stack, _ = two_cells
    session, layers = _session({"stack": stack})
    seen = []
    session.changed.connect(seen.append)
    session.guard(session.commit)                    # nothing to commit, no model
    assert session.state.last_message[0] == "error" and "click on an object first" in session.state.last_message[1]
    session.load("no-such-model.pt", device="cpu")  # a load that fails: the model state says so
    assert session.models.state.phase == "failed" and session.state.model.phase == "failed"
    assert session.state.status.startswith("no model")
    session.set_image("stack")
    session.guard(session.propagate)
    assert "no model loaded yet" in session.state.last_message[1]
    assert all(isinstance(s.events, tuple) for s in seen) and seen[-1] is session.state
    with pytest.raises(Exception):
        session.state.status = "changed"          # the published state is immutable


class HeldRunner(SyncRunner):
    """Holds a job until :meth:`release`: a model load still running when the person clicks."""

    def __init__(self):
        super().__init__()
        self.held = None

    def start(self, generator_fn, **callbacks):
        self.held, self.running = (generator_fn, callbacks), True

    def release(self):
        (fn, callbacks), self.held = self.held, None
        SyncRunner.start(self, fn, **callbacks)


def test_a_click_during_the_model_load_is_previewed_once_the_model_is_ready(two_cells, tmp_path, monkeypatch):
    monkeypatch.setenv("GRANSEG_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GRANSEG_OFFLINE", "1")
    stack, scenes = two_cells
    layers, loads = ArrayLayers({"stack": stack}), HeldRunner()
    session = InteractiveSession(layers, task_runner=SyncRunner(), preview_runner=SyncRunner(), model_runner=loads,
                                 debounce=ImmediateTimer)
    session.set_image("stack")
    layers.index = (2,)
    session.set_granularity(1.0)
    session.load("unsamv2-demo", device="cpu")
    assert session.state.model.phase == "loading" and session.busy
    session.add_prompt(scenes[2].centers[0])         # clicked while the model loads: nothing to show yet
    assert layers.preview is None and session.state.status == "loading the model…"
    loads.release()                                  # the load ends: the waiting click is previewed
    assert session.state.model.phase == "ready" and not session.busy
    assert _iou(layers.preview, scenes[2].masks[2][0]) > 0.8
    assert "C commits it as a new label" in session.state.status

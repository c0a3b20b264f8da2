"""The recovery store on its own (no napari): what goes in comes back, keyed by file or content, bounded.

Every test works in its own folder (``GRANSEG_RECOVERY_DIR``); "another session" is an entry whose manifest
names a process that does not run, as a crashed napari leaves it.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from napari_granseg.recovery import RecoveryDiskFull, RecoverySettings, RecoveryStore, content_key, path_key, prune
from napari_granseg.recovery import entry as entry_module
from napari_granseg.recovery.session import current_session


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("GRANSEG_RECOVERY_DIR", str(tmp_path / "store"))
    return RecoverySettings.from_env()


def _gone(store: RecoveryStore, eid: str, updated: float | None = None, released: float | None = None) -> None:
    """Make entry ``eid`` look as left by a process that is gone (a crash), last written at ``updated``."""
    me = current_session()
    entry = store._entry(eid)
    entry.update_manifest(session={"id": f"gone-{eid}", "pid": 2**22 + 12345, "started": 1.0, "host": me["host"]},
                          updated=entry.info["updated"] if updated is None else updated, released=released)


def test_recorded_regions_come_back_exactly_and_only_changed_chunks_are_written(settings):
    image = np.random.default_rng(0).random((600, 520)).astype(np.float32)
    store = RecoveryStore.open_for(image, shape=(600, 520), dtype=np.int32)
    expected = np.zeros((600, 520), np.int32)
    expected[10:50, 240:300] = 1  # across two chunks of 256 columns
    eid = store.record("granseg labels", (slice(10, 50), slice(240, 300)), expected[10:50, 240:300])
    folder = store.folder / eid
    assert sorted(p.name for p in folder.iterdir() if p.name != "manifest.json") == ["0.0~1", "0.1~1"]
    # an edit inside one chunk rewrites that chunk only; the replaced version is removed
    expected[300:310, 300:310] = 2
    store.record("granseg labels", (slice(300, 310), slice(300, 310)), 2)
    assert sorted(p.name for p in folder.iterdir() if p.name != "manifest.json") == ["0.0~1", "0.1~1", "1.1~2"]
    # writing what is already there writes nothing
    assert store._entry(eid).record((slice(300, 310), slice(300, 310)), 2) == 0
    # erasing a chunk's last label removes its file (absent = zero)
    expected[300:310, 300:310] = 0
    store.record("granseg labels", (slice(290, 320), slice(290, 320)), expected[290:320, 290:320])
    assert not any(p.name.startswith("1.1~") for p in folder.iterdir())
    _gone(store, eid)
    again = RecoveryStore.open_for(image.copy())
    [info] = again.recoverable()
    assert info.name == "granseg labels" and info.shape == (600, 520) and info.dtype == "int32"
    np.testing.assert_array_equal(again.restore("granseg labels"), expected)


def test_a_stack_region_and_int_indices(settings):
    store = RecoveryStore.open_for(np.arange(12.0).reshape(3, 4), shape=(5, 300, 300), dtype=np.uint16)
    block = np.zeros((40, 40), np.uint16)
    block[5:30, 5:30] = 7
    store.record("L", (3, slice(250, 290), slice(10, 50)), block)
    out = store.restore("L")
    assert out.dtype == np.uint16 and out.shape == (5, 300, 300)
    np.testing.assert_array_equal(out[3, 250:290, 10:50], block)
    assert out.sum() == block.sum()
    with pytest.raises(ValueError, match="outside"):
        store.record("L", (5,), 1)


def test_path_key_follows_the_file_and_content_key_the_pixels(settings, tmp_path):
    tifffile = pytest.importorskip("tifffile")
    image = np.random.default_rng(1).integers(0, 4000, (64, 64), dtype=np.uint16)
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    tifffile.imwrite(a, image)
    tifffile.imwrite(b, image)
    assert path_key(a).store_id == path_key(str(a)).store_id
    assert path_key(a).store_id != path_key(b).store_id  # same pixels, another file: another store
    before = path_key(a).store_id
    os.utime(a, ns=(time.time_ns(), time.time_ns() + 10**9))  # the file changed: its old labels are not offered
    assert path_key(a).store_id != before
    store = RecoveryStore.open_for(a, shape=image.shape, dtype=np.int32)
    assert store.key.kind == "path" and store.key.source == str(a.resolve())
    # content: equal pixels give the same key whatever the array type; one pixel more does not
    assert content_key(image).store_id == content_key(image.copy()).store_id
    changed = image.copy()
    changed[5, 5] += 1
    assert content_key(changed).store_id != content_key(image).store_id
    assert content_key(image.astype(np.int32)).store_id != content_key(image).store_id
    with pytest.raises(ValueError, match="cannot read"):
        path_key(tmp_path / "missing.tif")
    url = "https://example.org/data/cells.ome.zarr"  # never read: the address is the key
    assert path_key(url).store_id == path_key(url).store_id != path_key(url + "/0").store_id


def test_content_key_of_a_large_stack_reads_a_bounded_part(settings):
    from napari_granseg.recovery.keys import FINGERPRINT_BYTES

    class Counting:
        """A (40, 1024, 1024) float32 stack (160 MB) that counts the bytes read."""
        shape, dtype, read = (40, 1024, 1024), np.dtype(np.float32), 0

        def __getitem__(self, key):
            out = np.full((1024, 1024), float(key), np.float32)
            Counting.read += out.nbytes
            return out

    key = content_key(Counting())
    assert key.kind == "content" and Counting.read <= FINGERPRINT_BYTES + 4 * 2**20


def test_live_sessions_are_not_offered_and_adopting_continues_the_entry(settings):
    image = np.ones((64, 64), np.uint8)
    store = RecoveryStore.open_for(image, shape=(64, 64), dtype=np.int32)
    eid = store.record("labels", (slice(0, 8), slice(0, 8)), 1)
    assert store.recoverable() == [] and store.entries()[0].alive  # this process runs: nothing to recover
    _gone(store, eid)
    other = RecoveryStore.open_for(image)
    assert [e.id for e in other.recoverable()] == [eid]
    other.restore(eid, adopt=True, new_name="labels [2]")
    assert other.recoverable() == []
    other.record("labels [2]", (slice(8, 16), slice(0, 8)), 2)
    assert store.entries()[0].name == "labels [2]"
    out = other.restore(eid)
    assert (out[:8, :8] == 1).all() and (out[8:16, :8] == 2).all()
    other.discard(eid)
    assert other.entries() == []
    other.discard()
    assert not other.folder.exists()


def test_age_and_size_bounds_remove_the_oldest_sessions_first(settings, monkeypatch):
    now = time.time()
    day = 86400.0
    ids = {}
    live = RecoveryStore.open_for(np.zeros((32, 32), np.uint8), shape=(300, 300), dtype=np.int32)
    live.record("live", (slice(0, 300), slice(0, 300)), np.random.default_rng(9).integers(0, 50, (300, 300)))
    for name, age, released in (("saved-3d", 3, True), ("saved-10d", 10, True), ("crash-20d", 20, False),
                                ("crash-40d", 40, False)):
        store = RecoveryStore.open_for(np.full((32, 32), age, np.uint8), shape=(300, 300), dtype=np.int32)
        eid = store.record(name, (slice(0, 300), slice(0, 300)), np.random.default_rng(age).integers(
            0, 50, (300, 300)).astype(np.int32))
        _gone(store, eid, updated=now - age * day, released=(now - age * day) if released else None)
        ids[name] = (store, eid)
    # default: kept 7 days after a normal end, 30 after a crash
    prune(RecoverySettings.from_env())  # (each open_for above pruned too)
    left = {n for n, (s, e) in ids.items() if (s.folder / e).exists()}
    assert left == {"saved-3d", "crash-20d"}
    # a size limit below the store's size: the oldest session that does not run goes first; a live one never
    sizes = {n: ids[n][0]._entry(ids[n][1]).nbytes for n in left}
    limit = sum(sizes.values()) + live._entry(live.entries()[0].id).nbytes - 1
    monkeypatch.setenv("GRANSEG_RECOVERY_MAX_MB", str(limit / 2**20))
    report = RecoveryStore.open_for(np.zeros((8, 8), np.uint8)).pruned
    assert report.removed_entries == 1 and not (ids["crash-20d"][0].folder / ids["crash-20d"][1]).exists()
    assert (ids["saved-3d"][0].folder / ids["saved-3d"][1]).exists() and live.entries()
    monkeypatch.setenv("GRANSEG_RECOVERY_MAX_MB", "0")
    report = RecoveryStore.open_for(np.zeros((8, 8), np.uint8)).pruned
    assert live.entries() and "over its limit" in report.warning and "GRANSEG_RECOVERY_MAX_MB" in report.warning


def test_a_normal_end_is_kept_keep_days(settings, monkeypatch):
    image = np.ones((16, 16), np.uint8)
    store = RecoveryStore.open_for(image, shape=(16, 16), dtype=np.int32)
    eid = store.record("labels", (slice(0, 4),), 3)
    assert store.release() == 1 and store.entries()[0].released
    _gone(store, eid, released=store.entries()[0].released)
    monkeypatch.setenv("GRANSEG_RECOVERY_KEEP_DAYS", "0")
    time.sleep(0.01)
    assert RecoveryStore.open_for(image).entries() == []


def test_a_full_disk_refuses_with_a_message_and_keeps_the_previous_state(settings, monkeypatch):
    store = RecoveryStore.open_for(np.ones((8, 8)), shape=(64, 64), dtype=np.int32)
    eid = store.record("labels", (slice(0, 10), slice(0, 10)), 1)

    class Usage:
        free = 10 * 2**20

    monkeypatch.setattr(entry_module.shutil, "disk_usage", lambda _p: Usage)
    with pytest.raises(RecoveryDiskFull, match="full .*10 MB free.*Save the layer.*GRANSEG_RECOVERY_DIR"):
        store.record("labels", (slice(20, 30), slice(20, 30)), 2)
    monkeypatch.undo()
    monkeypatch.setenv("GRANSEG_RECOVERY_DIR", str(settings.root))
    out = store.restore(eid)
    assert (out[:10, :10] == 1).all() and out.sum() == 100


def test_bad_settings_name_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("GRANSEG_RECOVERY_KEEP_DAYS", "a week")
    with pytest.raises(ValueError, match="GRANSEG_RECOVERY_KEEP_DAYS='a week'"):
        RecoverySettings.from_env()
    monkeypatch.delenv("GRANSEG_RECOVERY_KEEP_DAYS")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("GRANSEG_RECOVERY_DIR", str(blocker / "store"))
    from napari_granseg.recovery import RecoveryError

    with pytest.raises(RecoveryError, match="GRANSEG_RECOVERY_DIR"):
        RecoveryStore.open_for(np.ones((4, 4)))

"""A writer killed in the middle of a write leaves the previous complete state readable, never a mix.

Two ways: (1) the process dies exactly between writing an edit's chunk files and swapping the manifest
(``os._exit`` in place of the swap); (2) a process recording versions 1, 2, 3... of an edit that spans several
chunks is SIGKILLed at an arbitrary moment, several times: the store must then hold one complete version.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from napari_granseg.recovery import RecoveryStore

SHAPE = (3, 600, 600)
REGION = (1, slice(100, 560), slice(100, 560))  # 3 x 3 chunks of 256 px on slice 1

WRITER = textwrap.dedent("""
    import os, sys
    import numpy as np
    from napari_granseg.recovery import RecoveryStore
    from napari_granseg.recovery import entry as entry_module

    mode = sys.argv[1]
    image = np.arange(64, dtype=np.uint16).reshape(8, 8)
    store = RecoveryStore.open_for(image, shape={shape}, dtype="int32")
    region = {region}
    store.record("labels", region, np.full((460, 460), 1, np.int32), "version 1")
    if mode == "die-before-swap":
        def die(*args, **kwargs):
            os._exit(3)
        entry_module.write_json = die  # the manifest swap of the next write never happens
        store.record("labels", region, np.full((460, 460), 2, np.int32), "version 2")
    else:
        print("ready", flush=True)
        k = 1
        while True:
            k += 1
            store.record("labels", region, np.full((460, 460), k, np.int32), f"version {{k}}")
""").format(shape=SHAPE, region=REGION)


def _env(tmp_path):
    env = dict(os.environ, GRANSEG_RECOVERY_DIR=str(tmp_path / "store"))
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    return env


def _read_back(tmp_path, monkeypatch) -> tuple[np.ndarray, str]:
    monkeypatch.setenv("GRANSEG_RECOVERY_DIR", str(tmp_path / "store"))
    store = RecoveryStore.open_for(np.arange(64, dtype=np.uint16).reshape(8, 8))
    [entry] = store.recoverable()  # the writer is gone
    return store.restore(entry.id)[REGION], entry.writer


def test_killed_between_chunk_files_and_manifest_swap_reads_the_previous_state(tmp_path, monkeypatch):
    out = subprocess.run([sys.executable, "-c", WRITER, "die-before-swap"], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out.stderr
    store_dir = next((tmp_path / "store").glob("*/*/manifest.json")).parent
    newer = [p.name for p in store_dir.iterdir() if p.name.endswith("~2")]
    assert len(newer) == 9  # the new version's chunks are all on disk, the swap is what never came
    region, writer = _read_back(tmp_path, monkeypatch)
    assert (region == 1).all() and writer == "version 1"
    # restoring takes the entry over: the files of the interrupted write go, and writing works again
    store = RecoveryStore.open_for(np.arange(64, dtype=np.uint16).reshape(8, 8))
    eid = store.recoverable()[0].id
    store.restore(eid, adopt=True)
    assert not any(p.name.endswith("~2") for p in store_dir.iterdir())
    store.record("labels", REGION, 5, entry_id=eid)
    assert (store.restore(eid)[REGION] == 5).all()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="Windows has no SIGKILL")
@pytest.mark.parametrize("delay", [0.35, 0.8, 1.5])
def test_sigkill_at_any_moment_leaves_one_complete_version(tmp_path, monkeypatch, delay):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, "loop"], env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    region, writer = _read_back(tmp_path, monkeypatch)
    values = np.unique(region)
    assert values.size == 1, f"a mix of versions {values} after the kill"
    assert writer == f"version {int(values[0])}"
    print(f"killed after {delay} s: version {int(values[0])} complete")

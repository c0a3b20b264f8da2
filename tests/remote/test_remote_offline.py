"""Parts of remote compute that need no worker: packing, the address policy, newest-value-wins."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_granseg import remote
from napari_granseg.remote.client.wire import image_digest, pack_array, pack_mask, unpack_array


def test_masks_and_arrays_round_trip_exactly_and_masks_pack_small():
    rng = np.random.default_rng(0)
    mask = np.zeros((3, 1024, 1024), bool)
    mask[:, 300:700, 200:650] = True
    packed = pack_mask(mask)
    assert np.array_equal(unpack_array(packed), mask)
    assert len(packed["data"]) < mask.nbytes / 1000  # bits + zlib: a few KB instead of 3 MB
    odd = rng.random((5, 7)) > 0.5  # a size that is not a multiple of 8 bits
    assert np.array_equal(unpack_array(pack_mask(odd)), odd)
    for arr in (rng.normal(size=(2, 64, 64)).astype(np.float32), rng.integers(0, 65535, (33, 17), np.uint16),
                np.arange(12, dtype=">i4").reshape(3, 4)):
        back = unpack_array(pack_array(arr))
        assert back.dtype == arr.dtype and np.array_equal(back, arr) and back.flags.writeable


def test_image_digest_follows_pixels_shape_and_dtype():
    a = np.arange(64, dtype=np.uint16).reshape(8, 8)
    assert image_digest(a) == image_digest(a.copy())
    b = a.copy()
    b[3, 3] += 1
    assert image_digest(b) != image_digest(a)
    assert image_digest(a.reshape(4, 16)) != image_digest(a)
    assert image_digest(a.astype(np.int16)) != image_digest(a)


@pytest.mark.parametrize("address", ["tcp://192.0.2.1:8786", "192.0.2.1:8786", "tcp://gpu-node.example.org:8786",
                                     "ws://192.0.2.1:8786", "tcp://[2001:db8::1]:8786"])
def test_plain_address_on_another_machine_is_refused_before_any_connection(address, monkeypatch):
    import distributed

    def no_client(*args, **kwargs):  # pragma: no cover - reaching this is the failure
        raise AssertionError("a connection was attempted to a refused address")

    monkeypatch.setattr(distributed, "Client", no_client)
    with pytest.raises(remote.InsecureAddressError) as info:
        remote.connect(address)
    msg = str(info.value)
    assert "ssh -N -L 8786:127.0.0.1:8786" in msg and "tls://" in msg and "require_encryption=True" in msg
    assert "allow_insecure_remote=True" in msg


def test_loopback_and_explicit_addresses_pass_the_policy():
    for address in ("tcp://127.0.0.1:8786", "127.0.0.1:8786", "tcp://localhost:8786", "tcp://[::1]:8786",
                    "tcp://127.4.5.6:1"):
        assert remote.is_loopback_address(address)
        assert remote.check_address(address).startswith("tcp://")
    assert remote.check_address("tcp://192.0.2.1:8786", allow_insecure_remote=True) == "tcp://192.0.2.1:8786"
    with pytest.raises(ValueError, match="security="):
        remote.check_address("tls://192.0.2.1:8786")
    assert remote.check_address("tls://192.0.2.1:8786", security=object()) == "tls://192.0.2.1:8786"
    with pytest.raises(ValueError, match="unknown scheme"):
        remote.check_address("udp://127.0.0.1:1", allow_insecure_remote=True)
    with pytest.raises(ValueError, match="address="):
        remote.check_address("")


def test_a_loaded_model_of_no_zoo_name_cannot_travel():
    class Loaded:
        name = "my-local-weights.pt"

    with pytest.raises(TypeError, match="path of the checkpoint on the worker"):
        remote.model_spec(Loaded())

    class Zoo:
        name = "unsamv2-demo"

    assert remote.model_spec(Zoo())["name"] == "unsamv2-demo"
    assert remote.model_spec("/data/ckpt.pt", kind="unsamv2")["kind"] == "unsamv2"


def test_latest_only_runs_the_running_value_then_only_the_newest():
    gate = threading.Event()
    started = threading.Event()
    ran, delivered = [], []

    def slow(value):
        ran.append(value)
        started.set()
        gate.wait(5)
        return value * 10

    latest = remote.LatestOnly(slow, on_result=lambda v, r: delivered.append((v, r)))
    try:
        latest.submit(1)
        assert started.wait(5)
        for v in range(2, 11):  # the slider moves on while 1 is computing
            latest.submit(v)
        assert latest.busy
        gate.set()
        assert latest.wait_idle(5)
        assert ran == [1, 10]
        assert delivered == [(1, 10), (10, 100)]
        assert latest.counts == {"submitted": 10, "run": 2, "skipped": 8}
        assert latest.latest == 10 and not latest.busy
    finally:
        gate.set()
        latest.close(5)


def test_latest_only_reports_errors_and_keeps_serving():
    errors, results = [], []

    def fn(value):
        if value < 0:
            raise ValueError(f"bad value {value}")
        return value

    latest = remote.LatestOnly(fn, on_result=lambda v, r: results.append(r), on_error=lambda v, e: errors.append(e))
    try:
        latest.submit(-1)
        assert latest.wait_idle(5)
        latest.submit(2)
        assert latest.wait_idle(5)
        assert [str(e) for e in errors] == ["bad value -1"] and results == [2]
    finally:
        latest.close(5)
    with pytest.raises(RuntimeError, match="closed"):
        latest.submit(4)


def test_latest_only_discards_the_waiting_value_on_request():
    gate, started, ran = threading.Event(), threading.Event(), []

    def fn(value):
        ran.append(value)
        started.set()
        gate.wait(5)

    latest = remote.LatestOnly(fn)
    try:
        latest.submit("old image")
        assert started.wait(5)
        latest.submit("preview on the old image")
        assert latest.discard_pending() is True  # the image changed: the waiting preview is moot
        assert latest.discard_pending() is False
        gate.set()
        assert latest.wait_idle(5)
        assert ran == ["old image"]
    finally:
        gate.set()
        latest.close(5)


def test_version_differences_name_each_package_and_side():
    from napari_granseg.remote.client.versions import local_versions, version_differences

    here = local_versions()
    assert here["python"].count(".") == 1 and here["napari-granseg"]
    assert version_differences(here, {"tcp://w:1": dict(here)}) == []
    theirs = {**here, "torch": "0.0.1", "sam2": None}
    lines = version_differences(here, {"tcp://w:1": theirs})
    assert len(lines) == 2
    assert any(f"torch: this machine {here['torch']}, worker tcp://w:1 0.0.1" in line for line in lines)
    assert any("sam2" in line and "worker tcp://w:1 not installed" in line for line in lines)


def test_no_scheduler_at_a_local_address_is_a_remote_error_saying_what_to_check():
    import socket

    with socket.socket() as s:  # a free local port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(remote.RemoteError, match="could not reach the dask scheduler at tcp://127.0.0.1:.*tunnel"):
        remote.connect(f"tcp://127.0.0.1:{port}", timeout=1)

"""Scheduler addresses: one that is not an address is named malformed (not blamed on security or int()), and a
port where something other than a dask scheduler answers gives up within the timeout the message states."""
from __future__ import annotations

import socket
import threading

import numpy as np
import pytest
import tifffile

from napari_granseg import remote
from napari_granseg.cli import main


@pytest.mark.parametrize("address, why", [
    ("not an address", "contains spaces"),
    ("localhost:abc", "the port 'abc' is not a number"),
    ("tcp://127.0.0.1:99999", "the port '99999' is not a number from 1 to 65535"),
    ("tcp://:8786", "'' is not a host name"),
])
def test_a_malformed_address_is_named_malformed(address, why):
    with pytest.raises(remote.MalformedAddressError, match="is malformed") as err:
        remote.check_address(address)
    assert why in str(err.value)
    with pytest.raises(remote.MalformedAddressError):
        remote.connect(address, timeout=1)


def test_the_cli_refuses_a_malformed_scheduler_before_any_image(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((16, 16), np.uint8))
    rc = main(["segment", str(tmp_path / "a.tif"), "--out", str(tmp_path / "out"), "--scheduler", "localhost:abc",
               "--no-progress"])
    assert rc == 2
    assert "is malformed: the port 'abc' is not a number" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.fixture
def silent_port():
    """A loopback port that accepts connections and never says anything (not a dask scheduler)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_something_that_is_not_a_scheduler_gives_up_within_the_stated_time(silent_port):
    with pytest.raises(remote.RemoteError, match=r"within 2 s \(something may answer there, but not a dask "
                                                 r"scheduler\)"):
        remote.connect(f"tcp://127.0.0.1:{silent_port}", timeout=2)

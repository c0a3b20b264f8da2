"""Model zoo: cache dir, downloads (atomic, hash-checked), offline errors, bad checkpoints, devices."""
from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import time
from dataclasses import replace

import pytest
import torch

from napari_granseg import zoo
from napari_granseg.checkpoints import CheckpointError, save_checkpoint
from napari_granseg.devices import resolve_device

TINY = "granseg_tiny.yaml"


@pytest.fixture
def tiny_ckpt(tiny_unsamv2_ckpt):
    return tiny_unsamv2_ckpt


@pytest.fixture
def http_server(tmp_path):
    """A loopback HTTP server serving tmp_path/www (no outside network is used)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_offline_download_fails_fast_with_url_and_path(cache, monkeypatch):
    monkeypatch.setenv("GRANSEG_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(zoo.ModelDownloadError) as err:
        zoo.load_model("unsamv2-plus")
    msg = str(err.value)
    assert "unsamv2-plus" in msg and "1M56QN2CWfou7h5azxJvc_igmbQh9D2af" in msg
    assert str(cache / "unsamv2_plus_ckpt.pt") in msg
    assert time.perf_counter() - t0 < 5


def test_unreachable_url_gives_the_manual_instructions(cache, monkeypatch):
    spec = replace(zoo.ZOO["unsamv2"], urls=("http://127.0.0.1:9/unsamv2_ckpt.pt",), gdrive_id=None)
    monkeypatch.setitem(zoo.ZOO, "unsamv2", spec)
    with pytest.raises(zoo.ModelDownloadError, match="put it at .*unsamv2_ckpt.pt"):
        zoo.load_model("unsamv2")
    assert not list(cache.glob("*")) or not any(p.suffix == ".pt" for p in cache.iterdir())


def test_download_verifies_hash_and_is_atomic(cache, http_server, tiny_ckpt, monkeypatch):
    root, base = http_server
    data = tiny_ckpt.read_bytes()
    (root / "m.pt").write_bytes(data)
    good = replace(zoo.ZOO["unsamv2"], config=TINY, urls=(f"{base}/m.pt",), gdrive_id=None, size_mb=None,
                   sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(zoo.ZOO, "unsamv2", good)
    model = zoo.load_model("unsamv2", device="cpu")
    assert (cache / "unsamv2_ckpt.pt").read_bytes() == data
    assert model.kind == "unsamv2" and model.name == "unsamv2"
    # a wrong hash: error, and nothing left in the cache under the final name
    (cache / "unsamv2_ckpt.pt").unlink()
    bad = replace(good, sha256="0" * 64)
    monkeypatch.setitem(zoo.ZOO, "unsamv2", bad)
    with pytest.raises(zoo.ModelDownloadError, match="could not download"):
        zoo.load_model("unsamv2", device="cpu")
    assert not (cache / "unsamv2_ckpt.pt").exists()


def test_checkpoint_under_upstream_name_or_alias_needs_no_renaming(cache, tiny_ckpt, monkeypatch):
    monkeypatch.setitem(zoo.ZOO, "unsamv2-plus", replace(zoo.ZOO["unsamv2-plus"], config=TINY))
    cache.mkdir(parents=True)
    (cache / "UnSAMv2+.pt").write_bytes(tiny_ckpt.read_bytes())
    monkeypatch.setenv("GRANSEG_OFFLINE", "1")
    model = zoo.load_model("unsamv2-plus", device="cpu")
    assert model.checkpoint.name == "UnSAMv2+.pt"
    assert zoo.default_model_name("unsamv2") == "unsamv2-plus"


def test_default_is_demo_when_nothing_cached(cache):
    assert zoo.default_model_name("unsamv2") == "unsamv2-demo"


def test_truncated_checkpoint_says_truncated(tmp_path, tiny_ckpt):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_ckpt.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        zoo.load_model(cut, kind="unsamv2", config=TINY)


def test_checkpoint_of_another_model_says_which(tmp_path, tiny_ckpt):
    # an UnSAMv2 file loaded as plain SAM 2: the error points to kind='unsamv2'
    with pytest.raises(CheckpointError, match="kind='unsamv2'"):
        zoo.load_model(tiny_ckpt, kind="sam2", config=TINY)
    # a plain SAM 2 file loaded as UnSAMv2: missing granularity keys listed
    sam2 = zoo.load_model(None, kind="sam2", config=TINY)
    path = save_checkpoint(sam2.module.state_dict(), tmp_path / "sam2.pt")
    with pytest.raises(CheckpointError, match="missing keys.*(gra_token|fourier_embedder|granularity_embedding)"):
        zoo.load_model(path, kind="unsamv2", config=TINY)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "obj": threading.Lock}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        zoo.load_model(path, kind="unsamv2", config=TINY)


def test_sam2_round_trip_is_exact(tmp_path):
    torch.manual_seed(3)
    a = zoo.load_model(None, kind="sam2", config=TINY)
    path = save_checkpoint(a.module.state_dict(), tmp_path / "sam2_tiny.pt")
    b = zoo.load_model(path, kind="sam2", config=TINY)
    for (ka, va), (kb, vb) in zip(a.module.state_dict().items(), b.module.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_bad_arguments_say_what_to_do(tmp_path, tiny_ckpt):
    with pytest.raises(ValueError, match="give kind="):
        zoo.load_model(tiny_ckpt)
    with pytest.raises(FileNotFoundError, match="neither a zoo model"):
        zoo.load_model(tmp_path / "nope.pt", kind="unsamv2")
    with pytest.raises(FileNotFoundError, match="SAM 2 config"):
        zoo.load_model(None, kind="unsamv2", config="configs/nope.yaml")


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")

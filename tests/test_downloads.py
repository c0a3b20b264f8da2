"""Downloads against loopback servers only (127.0.0.1): Google Drive's confirmation flow through gdown, the
Hugging Face hub through huggingface_hub, plain URLs; payload checks before the cache; the sha256 record."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
import urllib.parse
from dataclasses import replace

import pytest
import requests
import torch

from napari_granseg import downloads, zoo
from napari_granseg.checkpoints import CheckpointError, save_checkpoint

TINY = "granseg_tiny.yaml"
FILE_ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz012345"
UUID = "7d1c5a2e-0b7f-4c35-9f0e-2f9a6c1d8e44"


@pytest.fixture
def unsamv2_bytes(tiny_unsamv2_ckpt):
    return tiny_unsamv2_ckpt.read_bytes()


@pytest.fixture(scope="module")
def sam2_bytes(tmp_path_factory):
    torch.manual_seed(1)
    module = zoo.load_model(None, kind="sam2", config=TINY).module
    return save_checkpoint(module.state_dict(), tmp_path_factory.mktemp("ckpt") / "tiny_sam2.pt").read_bytes()


def _confirmation_page(file_id: str) -> bytes:
    """What Drive answers for a file too large to scan: a page whose form leads to the file (one line)."""
    return (
        '<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>'
        '<div class="uc-main"><p class="uc-warning-caption">Google Drive can\'t scan this file for viruses.</p>'
        '<p class="uc-warning-subcaption">unsamv2_ckpt.pt (186M) is too large for Google to scan for viruses. '
        'Would you still like to download this file?</p></div>'
        '<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
        '<input type="submit" id="uc-download-link" value="Download anyway"/>'
        f'<input type="hidden" name="id" value="{file_id}"><input type="hidden" name="export" value="download">'
        f'<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{UUID}">'
        '</form></body></html>').encode()


class _Server:
    """A loopback HTTP server in a thread; ``routes[path] -> (status, headers, body)`` decides answers."""

    def __init__(self, respond):
        self.requests: list[tuple[str, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, with_body: bool):
                outer.requests.append((self.command, self.path))
                status, headers, body = respond(self.command, self.path)
                self.send_response(status)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_GET(self):
                self._answer(True)

            def do_HEAD(self):
                self._answer(False)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def _drive(payload: bytes, token_required: bool = True):
    """Drive's two steps: /uc?id= gives the confirmation page; /download with the form's uuid gives the file."""
    def respond(method, path):
        url = urllib.parse.urlsplit(path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/uc" and query.get("id") == [FILE_ID]:
            return 200, {"Content-Type": "text/html; charset=utf-8"}, _confirmation_page(FILE_ID)
        if url.path == "/download" and (query.get("uuid") == [UUID] or not token_required) \
                and query.get("confirm") == ["t"]:
            return 200, {"Content-Type": "application/octet-stream",
                         "Content-Disposition": 'attachment; filename="unsamv2_ckpt.pt"'}, payload
        return 404, {"Content-Type": "text/html"}, b"<html><body>Not found</body></html>"
    return respond


@pytest.fixture
def route_google_to(monkeypatch):
    """Send requests for Google's hosts to a loopback server at the transport layer, so gdown's own logic
    (Drive URL parsing, the confirmation form, Content-Disposition) runs unchanged."""
    def install(server_url: str):
        original = requests.adapters.HTTPAdapter.send

        def send(self, request, *args, **kwargs):
            parts = urllib.parse.urlsplit(request.url)
            if parts.hostname in ("drive.google.com", "drive.usercontent.google.com", "docs.google.com"):
                request.url = server_url + parts.path + (f"?{parts.query}" if parts.query else "")
            return original(self, request, *args, **kwargs)

        monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    return install


def _drive_spec(monkeypatch, name="unsamv2"):
    spec = replace(zoo.ZOO[name], config=TINY, urls=(), gdrive_id=FILE_ID, size_mb=None, sha256=None)
    monkeypatch.setitem(zoo.ZOO, name, spec)
    return spec


def test_drive_confirmation_page_is_followed_and_hash_recorded(cache, unsamv2_bytes, route_google_to, monkeypatch):
    _drive_spec(monkeypatch)
    with _Server(_drive(unsamv2_bytes)) as server:
        route_google_to(server.url)
        model = zoo.load_model("unsamv2", device="cpu")
    paths = [p for _, p in server.requests]
    assert paths[0].startswith("/uc?") and f"id={FILE_ID}" in paths[0]
    assert any(p.startswith("/download?") and f"uuid={UUID}" in p for p in paths[1:])  # the form was followed
    target = cache / "unsamv2_ckpt.pt"
    assert target.read_bytes() == unsamv2_bytes and model.checkpoint == target
    record = json.loads(downloads.record_path(target).read_text())
    assert record["sha256"] == hashlib.sha256(unsamv2_bytes).hexdigest()
    assert record["size"] == len(unsamv2_bytes) and "Google Drive" in record["source"]
    assert zoo.model_status("unsamv2") == "present"
    assert sorted(p.name for p in cache.iterdir()) == ["unsamv2_ckpt.pt", "unsamv2_ckpt.pt.download.json"]


def test_changed_file_is_caught_by_the_recorded_hash(cache, unsamv2_bytes, route_google_to, monkeypatch):
    _drive_spec(monkeypatch)
    with _Server(_drive(unsamv2_bytes)) as server:
        route_google_to(server.url)
        zoo.load_model("unsamv2", device="cpu")
    target = cache / "unsamv2_ckpt.pt"
    damaged = bytearray(unsamv2_bytes)
    damaged[len(damaged) // 2] ^= 0xFF  # same size, one byte flipped
    target.write_bytes(bytes(damaged))
    monkeypatch.setenv("GRANSEG_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"hash mismatch: .*changed or is corrupt.*Delete .*unsamv2_ckpt\.pt"):
        zoo.load_model("unsamv2", device="cpu")
    assert zoo.model_status("unsamv2").startswith("hash mismatch")
    assert target.read_bytes() == bytes(damaged)  # reported, never deleted or replaced by the tool


def test_html_payload_is_rejected_before_the_cache(cache, route_google_to, monkeypatch):
    """Drive answers the 'file' with a quota page (as an attachment): refused, nothing under the final name."""
    _drive_spec(monkeypatch)
    page = b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>" + b" " * 200_000
    with _Server(_drive(page)) as server:
        route_google_to(server.url)
        with pytest.raises(zoo.ModelDownloadError) as err:
            zoo.load_model("unsamv2", device="cpu")
    msg = str(err.value)
    assert "web page (HTML" in msg and "put it at" in msg and str(cache / "unsamv2_ckpt.pt") in msg
    assert f"https://drive.google.com/uc?export=download&id={FILE_ID}" in msg
    assert "weights_only" not in msg
    assert list(cache.iterdir()) == []  # no file, no record, no temporary folder left


def test_plain_url_html_and_too_small_payloads_are_rejected(cache, monkeypatch):
    bodies = {"/page.pt": b"<html><body>Sign in to continue</body></html>",
              "/small.pt": b"PK\x03\x04" + b"\0" * 1000}
    with _Server(lambda m, p: (200, {"Content-Type": "application/octet-stream"}, bodies[p])) as server:
        spec = replace(zoo.ZOO["unsamv2"], config=TINY, gdrive_id=None, size_mb=186,
                       urls=(f"{server.url}/page.pt", f"{server.url}/small.pt"))
        monkeypatch.setitem(zoo.ZOO, "unsamv2", spec)
        with pytest.raises(zoo.ModelDownloadError) as err:
            zoo.load_model("unsamv2", device="cpu")
    msg = str(err.value)
    assert "page.pt: ValueError" in msg and "web page (HTML" in msg
    assert "small.pt: ValueError" in msg and "only 1004 bytes" in msg and "about 186 MB" in msg
    assert list(cache.iterdir()) == []


def test_second_source_is_used_when_the_first_fails(cache, unsamv2_bytes, monkeypatch):
    bodies = {"/ok.pt": unsamv2_bytes}
    with _Server(lambda m, p: (200, {}, bodies[p]) if p in bodies else (404, {}, b"<html>404</html>")) as server:
        spec = replace(zoo.ZOO["unsamv2"], config=TINY, gdrive_id=None, size_mb=None,
                       urls=(f"{server.url}/missing.pt", f"{server.url}/ok.pt"))
        monkeypatch.setitem(zoo.ZOO, "unsamv2", spec)
        zoo.load_model("unsamv2", device="cpu")
    assert (cache / "unsamv2_ckpt.pt").read_bytes() == unsamv2_bytes
    assert downloads.recorded_hash(cache / "unsamv2_ckpt.pt")["source"].endswith("/ok.pt")


def _hf_spec(monkeypatch):
    spec = replace(zoo.ZOO["sam2.1-hiera-tiny"], config=TINY, urls=(), size_mb=None)
    monkeypatch.setitem(zoo.ZOO, spec.name, spec)
    return spec


def test_hugging_face_hub_download_from_a_local_endpoint(cache, sam2_bytes, monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # nothing cached there
    spec = _hf_spec(monkeypatch)
    sha = hashlib.sha256(sam2_bytes).hexdigest()
    resolve = f"/{spec.hf_repo}/resolve/main/{spec.filename}"

    def respond(method, path):
        if urllib.parse.urlsplit(path).path == resolve:
            return 200, {"X-Repo-Commit": "a" * 40, "ETag": f'"{sha}"', "Content-Type": "application/octet-stream"}, \
                sam2_bytes
        return 404, {}, b"not found"

    with _Server(respond) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        model = zoo.load_model(spec.name, device="cpu")
    assert ("GET", resolve) in server.requests
    assert (cache / spec.filename).read_bytes() == sam2_bytes and model.kind == "sam2"
    assert downloads.recorded_hash(cache / spec.filename)["sha256"] == sha
    assert sorted(p.name for p in cache.iterdir()) == [spec.filename, spec.filename + ".download.json"]


def test_offline_uses_the_hugging_face_cache_and_leaves_it_alone(cache, sam2_bytes, monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    spec = _hf_spec(monkeypatch)
    hf_cache = tmp_path / "hf-cache"
    repo_dir = hf_cache / f"models--{spec.hf_repo.replace('/', '--')}"
    commit = "b" * 40
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit / spec.filename
    snapshot.parent.mkdir(parents=True)
    snapshot.write_bytes(sam2_bytes)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hf_cache))
    monkeypatch.setenv("GRANSEG_OFFLINE", "1")
    model = zoo.load_model(spec.name, device="cpu")
    assert model.checkpoint == cache / spec.filename and model.checkpoint.read_bytes() == sam2_bytes
    assert snapshot.read_bytes() == sam2_bytes  # copied, not moved


def test_offline_without_any_cache_fails_at_once_with_the_steps(cache, monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("GRANSEG_OFFLINE", "1")
    spec = zoo.ZOO["sam2.1-hiera-tiny"]
    with pytest.raises(zoo.ModelDownloadError) as err:
        zoo.load_model(spec.name)
    msg = str(err.value)
    assert "GRANSEG_OFFLINE=1" in msg and f"put it at {cache / spec.filename}" in msg
    assert downloads.hf_url(spec.hf_repo, spec.filename) in msg and spec.urls[0] in msg

"""A web page saved in place of a checkpoint is called what it is, with the fix; the file is left alone."""
from __future__ import annotations

import pytest

from napari_granseg import zoo
from napari_granseg.checkpoints import CheckpointError

PAGE = (b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>"
        b"<p>Google Drive can't scan this file for viruses.</p></body></html>")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    folder.mkdir()
    monkeypatch.setenv("GRANSEG_CACHE_DIR", str(folder))
    monkeypatch.setenv("GRANSEG_OFFLINE", "1")
    return folder


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_html_in_the_cache_is_reported_with_the_fix(cache):
    page = cache / "unsamv2_plus_ckpt.pt"
    page.write_bytes(PAGE)
    (cache / "readme.txt").write_text("kept")
    before = _snapshot(cache)
    with pytest.raises(CheckpointError) as err:
        zoo.load_model("unsamv2-plus")
    msg = str(err.value)
    assert f"{page} is a web page (HTML), not a checkpoint" in msg
    assert f"Delete {page} and download the file again" in msg and "by hand" in msg
    assert "weights_only" not in msg and "will likely succeed" not in msg
    status = zoo.model_status("unsamv2-plus")
    assert status.startswith(f"not a checkpoint (HTML page): delete {page}")
    assert zoo.model_status("unsamv2") == "missing"
    assert _snapshot(cache) == before  # reported, not deleted


def test_html_given_as_a_path_is_reported(tmp_path):
    path = tmp_path / "sam2.1_hiera_small.pt"
    path.write_bytes(b"\n  <html><body>Access denied</body></html>")
    with pytest.raises(CheckpointError, match="is a web page \\(HTML\\), not a checkpoint") as err:
        zoo.load_model(path, kind="sam2", config="granseg_tiny.yaml")
    assert "weights_only" not in str(err.value)
    assert path.read_bytes() == b"\n  <html><body>Access denied</body></html>"


def test_status_of_a_good_file_and_of_other_junk(cache, tmp_path):
    from napari_granseg.checkpoints import save_checkpoint
    from napari_granseg.models.unsamv2 import build_unsamv2, unsamv2_state_dict

    save_checkpoint(unsamv2_state_dict(build_unsamv2("granseg_tiny.yaml")), cache / "UnSAMv2.pt")
    status = zoo.model_status("unsamv2")
    assert status.startswith("incomplete (")  # a tiny test model is far smaller than the real UnSAMv2
    (cache / "sansa_universal.pth").write_bytes(b"\x00\x01 not a model")
    assert zoo.model_status("sansa-universal").startswith("not a checkpoint (unknown format): delete ")
    assert zoo.model_status("unsamv2-demo") == "present"

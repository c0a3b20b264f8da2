"""`granseg models` never calls a web page saved under a checkpoint's name "present", and leaves it alone."""
from __future__ import annotations

import hashlib

from napari_granseg.cli import main
from napari_granseg.zoo import checkpoint_path


def test_models_lists_a_saved_web_page_as_a_problem(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GRANSEG_CACHE_DIR", str(tmp_path))
    page = checkpoint_path("unsamv2-plus")
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_bytes(b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>")
    before = hashlib.sha256(page.read_bytes()).hexdigest()
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("unsamv2-plus"))
    assert "present" not in line and "PROBLEM" in line
    assert "HTML" in out and "delete" in out.lower()
    assert hashlib.sha256(page.read_bytes()).hexdigest() == before  # reported, never removed

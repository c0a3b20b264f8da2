"""``granseg-train demo`` / ``sansa-demo``: a few steps through the real rebuild path write a checkpoint that the
zoo loader reads and a JSON record with the command, the hash and the evaluation tables."""
from __future__ import annotations

import hashlib
import json

import pytest

import napari_granseg as gs


@pytest.mark.parametrize("which", ["unsamv2", "sansa"])
def test_rebuild_writes_a_loadable_checkpoint_and_its_record(tmp_path, which):
    from granseg_training.cli import main

    out = tmp_path / f"{which}_demo.pt"
    sub = "demo" if which == "unsamv2" else "sansa-demo"
    args = [sub, "--steps", "3", "--out", str(out), "--num-threads", "2"]
    if which == "unsamv2":
        args += ["--memory-steps", "2"]  # the second (memory) stage, from the first stage's checkpoint
    assert main(args) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["command"] == "granseg-train " + " ".join(args)
    assert meta["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert meta["train_config"]["out_dir"] == "<temporary>"
    if which == "sansa":
        assert meta["steps"] == 3
    if which == "unsamv2":
        assert meta["stages"]["images"]["steps"] == 3 and meta["stages"]["memory"]["steps"] == 2
        assert meta["automatic_defaults"] == {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.9,
                                        "use_m2m": False}
        assert meta["stage1_train_config"]["video_prob"] == 0 and meta["train_config"]["video_prob"] > 0
        assert meta["train_config"]["init_checkpoint"] == "<stage 1 checkpoint>"
        assert set(meta["eval"]["iou_tables"]) >= {"unseen_128px_3cells", "sample_nested_cells_256px_3cells"}
        assert set(meta["eval"]["propagation_iou"]) == {"unseen_2cell_stacks_128px_8slices",
                                                        "sample_cell_stack_256px_12slices"}
        model = gs.load_model(out, kind="unsamv2", config="granseg_tiny.yaml", device="cpu")
    else:
        assert set(meta["eval"]) == {"class_separation", "sample_shapes_series_iou"}
        model = gs.load_model(out, kind="sansa", config="granseg_tiny.yaml", base_checkpoint=out, device="cpu")
    assert model.kind == which and not list(tmp_path.glob("*.part"))

"""The fine-tune widget's state without a window: where a model name goes, which slices of a stack train, and
what the progress line says."""
from __future__ import annotations

import numpy as np
import pytest

from napari_granseg.widgets.finetune_session import FinetuneSession, training_pairs


def test_the_model_goes_to_the_caches_finetuned_folder_under_a_safe_name(tmp_path, monkeypatch):
    monkeypatch.setenv("GRANSEG_CACHE_DIR", str(tmp_path))
    assert FinetuneSession(name="membranes-v2").output_path() == tmp_path / "finetuned" / "membranes-v2.pt"
    for bad in ("", "my model", "../escape", "a/b"):
        with pytest.raises(ValueError, match="model name"):
            FinetuneSession(name=bad).output_path()
    with pytest.raises(ValueError, match="zoo"):
        FinetuneSession(name="unsamv2-demo").output_path()


def test_a_stack_contributes_its_labelled_slices_only():
    stack = np.random.default_rng(0).integers(0, 9, (4, 16, 16)).astype(np.uint16)
    labels = np.zeros((4, 16, 16), np.int32)
    labels[1, 2:5, 2:5] = 1
    labels[3, 8:12, 8:12] = 2
    pairs = training_pairs(stack, labels)
    assert [int(p[1].max()) for p in pairs] == [1, 2]
    assert np.array_equal(pairs[0][0], stack[1]) and np.array_equal(pairs[1][0], stack[3])
    with pytest.raises(ValueError, match="does not match"):
        training_pairs(stack, labels[:, :8])


def test_progress_line_says_step_loss_and_time_left():
    s = FinetuneSession()
    assert "encoding" in s.progress_text()
    s.on_progress(30, 200, 0.4567, 125.0)
    assert s.progress_text() == "step 30/200 · loss 0.457 · about 2.1 min left"


def _record(before, after):
    return {"objects_held_back": 3, "granularity": 1.0, "held_back_iou_before": before, "held_back_iou_after": after}


def test_the_result_line_warns_when_the_new_model_is_worse_or_still_poor(tmp_path):
    """A person choosing which model to use hears what the held-back objects say, in the result line itself."""
    from types import SimpleNamespace

    s = FinetuneSession(name="cells-v1")
    s.result = SimpleNamespace(info={"finetune": _record(0.70, 0.55)}, checkpoint=tmp_path / "cells-v1.pt")
    assert "does worse than the one it started from" in s.summary() and "0.55 vs 0.70" in s.summary()
    s.result.info["finetune"] = _record(0.30, 0.65)
    assert "label more images" in s.summary() and "worse" not in s.summary()
    s.result.info["finetune"] = _record(0.30, 0.90)
    assert s.summary().endswith("pick it in any widget's model list.")


def test_no_advice_without_held_back_scores():
    from napari_granseg.finetuning.advice import next_step_advice

    assert next_step_advice(_record(float("nan"), float("nan"))) == ""
    assert next_step_advice({}) == ""
    assert next_step_advice(_record(0.81, 0.80)) == ""  # within the noise of the score, and good enough

"""A checkpoint with NaN or inf weights is refused at load, naming the tensors; the user's files are untouched."""
from __future__ import annotations

import pytest
import torch

from napari_granseg.checkpoints import CheckpointError, save_checkpoint
from napari_granseg.loading import load_sansa
from napari_granseg.models.sansa import build_sansa_model, sansa_adapter_state_dict
from napari_granseg.models.unsamv2 import build_unsamv2, unsamv2_state_dict
from napari_granseg.zoo import load_model

TINY = "granseg_tiny.yaml"


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_nan_and_inf_weights_are_refused_naming_the_tensors(tmp_path):
    state = unsamv2_state_dict(build_unsamv2(TINY))
    state["sam_mask_decoder.gra_token.weight"][0, 3] = float("nan")
    state["image_encoder.neck.convs.0.conv.weight"].view(-1)[0] = float("inf")
    path = save_checkpoint(state, tmp_path / "diverged.pt")
    (tmp_path / "notes.txt").write_text("my notes")
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError) as err:
        load_model(path, kind="unsamv2", config=TINY)
    msg = str(err.value)
    assert "non-finite weights (NaN or inf) in 2 tensors" in msg
    assert "sam_mask_decoder.gra_token.weight" in msg and "image_encoder.neck.convs.0.conv.weight" in msg
    assert str(path) in msg and "download it again" in msg
    assert _snapshot(tmp_path) == before


def test_nan_sansa_adapter_is_refused(tmp_path):
    state = sansa_adapter_state_dict(build_sansa_model(TINY))
    key = sorted(k for k in state if k.endswith("up_proj.weight"))[0]
    state[key][0, 0] = float("nan")
    path = save_checkpoint(state, tmp_path / "adapters.pth")
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=rf"non-finite weights .*in 1 tensors, e\.g\. \['{key}'\]"):
        load_sansa(TINY, adapter_checkpoint=path)
    assert _snapshot(tmp_path) == before


def test_finite_checkpoint_with_integer_buffers_still_loads(tmp_path):
    """Only floating tensors are checked; a clean file loads with identical weights."""
    torch.manual_seed(2)
    model = build_unsamv2(TINY)
    path = save_checkpoint(unsamv2_state_dict(model), tmp_path / "ok.pt")
    loaded = load_model(path, kind="unsamv2", config=TINY).module
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k

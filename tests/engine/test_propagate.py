"""Stack propagation mechanics (in-memory frames, progress, cancel) with a random-weight tiny model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_granseg.engine.propagate import InMemoryFrames, ObjectPrompt, PropagationCancelled, propagate
from napari_granseg.synthetic import nested_cells_stack
from napari_granseg.zoo import load_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model(None, kind="unsamv2", config="granseg_tiny.yaml", device="cpu")


def test_frames_are_normalised_in_memory_with_one_range_for_the_stack():
    stack = np.zeros((3, 40, 50), np.uint16)
    stack[1] = 1000
    stack[2, :20] = 3000
    frames = InMemoryFrames(stack, 64)
    assert len(frames) == 3 and frames.hw == (40, 50)
    x = frames[1]
    assert x.shape == (3, 64, 64)
    # slice 1 is uniformly 1000: the same value everywhere, and not stretched to 1.0 (stack-wide range)
    assert torch.allclose(x[0], x[0, 0, 0].expand_as(x[0]))
    bright = frames[2][0, 5, 5]
    assert bright > x[0, 0, 0]


def test_propagation_progress_and_cancel(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stack, scenes = nested_cells_stack(n_slices=4, size=96)
    r, c = scenes[1].centers[0]
    seen = []
    labels = propagate(model, stack, ObjectPrompt(frame=1, points=[[c, r]], labels=[1], obj_id=3),
                       granularity=0.5, progress=lambda d, t: seen.append((d, t)))
    assert labels.shape == (4, 96, 96) and labels.dtype == np.int32
    assert set(np.unique(labels)) <= {0, 3}
    assert seen[-1][0] == len(seen) and seen[-1] == (5, 5)  # 4 slices + the prompted one visited twice: 100 %
    assert not list(tmp_path.rglob("*.jpg"))  # nothing written to disk
    with pytest.raises(PropagationCancelled):
        propagate(model, stack, ObjectPrompt(frame=0, points=[[c, r]]), granularity=0.5, cancel=lambda: True)


def test_bad_stack_and_prompt_errors(model):
    with pytest.raises(ValueError, match="pick one time point"):
        propagate(model, np.zeros((2, 3, 40, 40)), ObjectPrompt(frame=0, points=[[1, 1]]))
    with pytest.raises(ValueError, match="stack has 2 slices"):
        propagate(model, np.zeros((2, 40, 40), np.uint8), ObjectPrompt(frame=5, points=[[1, 1]]))


def test_in_memory_state_has_the_keys_sam2s_init_state_builds(model, tmp_path):
    """Our inference state is built without sam2's file loader: it must hold what init_state would."""
    from PIL import Image

    from napari_granseg.engine.propagate import init_state_in_memory

    stack = np.random.default_rng(0).integers(0, 255, (2, 40, 40)).astype(np.uint8)
    for i, plane in enumerate(stack):
        Image.fromarray(plane).convert("RGB").save(tmp_path / f"{i:05d}.jpg")
    with torch.inference_mode():
        official = model.module.init_state(str(tmp_path))
        ours = init_state_in_memory(model.module, InMemoryFrames(stack, int(model.image_size)))
    assert set(ours) == set(official)
    for key in ("num_frames", "video_height", "video_width", "device", "storage_device", "offload_video_to_cpu",
                "offload_state_to_cpu"):
        assert ours[key] == official[key], key
    assert set(ours["cached_features"]) == set(official["cached_features"]) == {0}


def test_sam2s_video_loader_is_not_patched(model):
    import sam2.sam2_video_predictor as video

    original = video.load_video_frames
    seen = []
    propagate(model, np.zeros((2, 32, 32), np.uint8), ObjectPrompt(frame=0, points=[[5, 5]]), granularity=0.5,
              progress=lambda d, t: seen.append(video.load_video_frames is original))
    assert seen and all(seen)


def test_frames_are_the_predictors_input_with_the_stack_range(model):
    """One normalisation path: a propagated slice is exactly the preview's input for that slice."""
    from napari_granseg.engine.interactive import GranularityPredictor
    from napari_granseg.engine.normalize import intensity_range

    stack = np.random.default_rng(3).integers(200, 3000, (3, 40, 50)).astype(np.uint16)
    stack[0, :5, :5] = 60000  # a hot pixel on one slice only
    frames = InMemoryFrames(stack, int(model.image_size))
    assert frames.intensity == intensity_range(stack)
    pred = GranularityPredictor(model, precision="fp32")
    for i in range(3):
        torch.testing.assert_close(frames[i], pred._model_input(stack[i], frames.intensity)[0], rtol=0, atol=0)
    # and not each slice's own range (the policy for stacks)
    assert not torch.equal(frames[0], pred._model_input(stack[0])[0])

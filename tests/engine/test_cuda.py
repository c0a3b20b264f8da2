"""GPU path checks. They run where CUDA is present (the lent GPU machine); CI has no GPU and skips them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_granseg.engine.interactive import GranularityPredictor
from napari_granseg.engine.propagate import ObjectPrompt, propagate
from napari_granseg.models.unsamv2 import unsamv2_state_dict
from napari_granseg.synthetic import nested_cells_scene, nested_cells_stack
from napari_granseg.zoo import load_model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (checked on the lent GPU machine)")


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    cpu = load_model(None, kind="unsamv2", config="granseg_tiny.yaml", device="cpu")
    gpu = load_model(None, kind="unsamv2", config="granseg_tiny.yaml", device="cuda")
    gpu.module.load_state_dict(unsamv2_state_dict(cpu.module))
    return cpu, gpu


@cuda
def test_cuda_fp32_matches_cpu(pair):
    cpu, gpu = pair
    scene = nested_cells_scene(size=128, seed=2)
    r, c = scene.centers[0]
    outs = []
    for m in (cpu, gpu):
        pred = GranularityPredictor(m, precision="fp32")
        pred.set_image(scene.image)
        outs.append(pred.predict([[c, r]], [1], granularity=[0.1, 0.5, 1.0], return_logits=True)[0])
    assert np.abs(outs[0] - outs[1]).max() < 1e-3 * max(1.0, np.abs(outs[0]).max())


@cuda
def test_cuda_bf16_agrees_with_fp32(pair):
    _, gpu = pair
    scene = nested_cells_scene(size=128, seed=3)
    r, c = scene.centers[0]
    masks = []
    for precision in ("fp32", "bf16"):
        pred = GranularityPredictor(gpu, precision=precision)
        pred.set_image(scene.image)
        masks.append(pred.predict([[c, r]], [1], granularity=0.5, return_logits=True)[0][0])
    a, b = masks
    corr = np.corrcoef(a.ravel(), b.ravel())[0, 1]
    assert corr > 0.98


@cuda
def test_cuda_propagation_runs_and_matches_cpu(pair):
    cpu, gpu = pair
    stack, scenes = nested_cells_stack(n_slices=4, size=96)
    r, c = scenes[1].centers[0]
    prompt = ObjectPrompt(frame=1, points=[[c, r]], labels=[1])
    a = propagate(cpu, stack, prompt, granularity=0.5, precision="fp32")
    b = propagate(gpu, stack, prompt, granularity=0.5, precision="fp32")
    assert (a == b).mean() > 0.99

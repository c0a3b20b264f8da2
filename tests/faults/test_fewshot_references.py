"""Fault table rows of the few-shot engine: more than 7 references all count; non-finite prompts are refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_granseg.engine.episode import target_step
from napari_granseg.engine.fewshot import FewShotError, FewShotSegmenter
from napari_granseg.models.sansa import build_sansa_model
from napari_granseg.synthetic import shapes_scene


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    m = build_sansa_model("granseg_tiny.yaml")
    with torch.no_grad():
        for a in m.adapters().values():
            a.up_proj.weight.normal_(0, 0.5)
    return m.eval()


@pytest.fixture(scope="module")
def scenes():
    return [shapes_scene(size=64, n_objects=3, seed=100 + s) for s in range(22)]


def _segmenter(model, refs):
    fs = FewShotSegmenter(model, image_size=None, precision="fp32")
    for img, lab in refs:
        fs.add_reference(img, mask=lab == 1)
    return fs


@torch.inference_mode()
def _single_bank(fs, target) -> np.ndarray:
    """All references in one SAM 2 memory (what the engine did before memory banks)."""
    memory = fs.memory()
    feats = fs.encode(fs.prepare(target)[0])
    k = fs.num_references
    with fs.precision_context():
        return target_step(fs.sam, feats, memory, frame_idx=k, num_frames=k + 1)["pred_masks"][0, 0].numpy()


def test_every_reference_changes_the_result(model, scenes):
    target = scenes[21][0]
    for k in (10, 20):
        refs = scenes[:k]
        swapped = refs[:3] + [scenes[20]] + refs[4:]  # reference 3 replaced by another labelled scene
        assert not np.array_equal(_segmenter(model, refs).segment(target).logits,
                                  _segmenter(model, swapped).segment(target).logits), k
    # in one memory of 20 frames, reference 3 is neither among the 6 frames before the target nor among the
    # 15 object pointers SAM 2 reads: it changed nothing
    assert np.array_equal(_single_bank(_segmenter(model, scenes[:20]), target),
                          _single_bank(_segmenter(model, scenes[:3] + [scenes[20]] + scenes[4:20]), target))


def test_nan_or_infinite_prompt_coordinates_are_refused(model, scenes):
    fs = FewShotSegmenter(model, image_size=None)
    img = scenes[0][0]
    for kw in (dict(points=[[np.nan, 3.0]]), dict(scribble=[[1.0, 2.0], [np.inf, 4.0]]),
               dict(box=[0, 0, np.nan, 10])):
        with pytest.raises(FewShotError, match="NaN|x0, y0, x1, y1"):
            fs.add_reference(img, **kw)
    assert fs.num_references == 0

"""One precision setting for the few-shot engine: "fp32" is float32 everywhere, whatever the caller does."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_granseg.devices import autocast_dtype
from napari_granseg.engine.fewshot import FewShotSegmenter
from napari_granseg.models.sansa import build_sansa_model
from napari_granseg.synthetic import shapes_scene

PARTS = ("image_encoder", "memory_encoder", "memory_attention", "sam_mask_decoder")
#: the encoder's bulk (a third-stage MLP of the tiny Hiera, stages [1, 1, 2, 1]) and one module of each part
#: "auto" keeps in float32 (devices.ENCODER_EXACT_PARTS)
BULK = "image_encoder.trunk.blocks.2.mlp"
EXACT = ("image_encoder.trunk.patch_embed", "image_encoder.trunk.blocks.0", "image_encoder.trunk.blocks.2.attn.proj",
         "image_encoder.neck", "sam_mask_decoder.conv_s0")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_sansa_model("granseg_tiny.yaml")
    with torch.no_grad():
        for a in m.adapters().values():
            a.up_proj.weight.normal_(0, 0.5)
    return m


def _run(model, precision, refs, target):
    fs = FewShotSegmenter(model, image_size=None, precision=precision)
    for img, lab in refs:
        fs.add_reference(img, mask=lab == 1)
    return fs.segment(target)


def _autocast_seen(model, precision, refs, target, outer: bool, parts=PARTS) -> dict[str, set[bool]]:
    """Whether autocast was on while each part ran (read in a forward hook, i.e. inside the part's call)."""
    seen: dict[str, set[bool]] = {p: set() for p in parts}
    hooks = [model.sam.get_submodule(p).register_forward_hook(
        lambda mod, args, out, p=p: seen[p].add(torch.is_autocast_enabled("cpu"))) for p in parts]
    try:
        if outer:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                _run(model, precision, refs, target)
        else:
            _run(model, precision, refs, target)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_fp32_ignores_an_outer_autocast_and_bf16_uses_it_everywhere(model):
    refs = [shapes_scene(size=96, n_objects=3, seed=s) for s in (0, 1)]
    target = shapes_scene(size=96, n_objects=3, seed=7)[0]
    plain = _run(model, "fp32", refs, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = _run(model, "fp32", refs, target)
    assert np.array_equal(plain.logits, inside.logits) and np.array_equal(plain.mask, inside.mask)
    assert plain.logits.dtype == np.float32
    assert _autocast_seen(model, "fp32", refs, target, outer=True) == {p: {False} for p in PARTS}
    assert _autocast_seen(model, "bf16", refs, target, outer=False) == {p: {True} for p in PARTS}
    # "auto": the image encoder's bulk in bf16 where this CPU has it natively, its exact parts and everything
    # else in float32 (the image encoder's own call runs under the bulk's autocast)
    native = autocast_dtype("cpu", "auto", "encoder") is not None
    assert _autocast_seen(model, "auto", refs, target, outer=True) == {
        p: {native and p == "image_encoder"} for p in PARTS}
    assert _autocast_seen(model, "auto", refs, target, outer=True, parts=(BULK, *EXACT)) == {
        p: {native and p == BULK} for p in (BULK, *EXACT)}
    assert _autocast_seen(model, "bf16", refs, target, outer=False, parts=(BULK, *EXACT)) == {
        p: {True} for p in (BULK, *EXACT)}
    assert not np.array_equal(plain.logits, _run(model, "bf16", refs, target).logits)


def test_bad_settings_are_refused_with_the_argument_named(model):
    with pytest.raises(ValueError, match="precision='fp16'"):
        FewShotSegmenter(model, precision="fp16")
    with pytest.raises(ValueError, match="image_size"):
        FewShotSegmenter(model, image_size=0)
    with pytest.raises(ValueError, match="image_size"):
        FewShotSegmenter(model, image_size="640")
    with pytest.raises(ValueError, match="intensity_range"):
        FewShotSegmenter(model, intensity_range=(5, 5))
    with pytest.raises(TypeError, match="autocast"):
        FewShotSegmenter(model, autocast=False)  # the old switch is gone: precision= replaces it

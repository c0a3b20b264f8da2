"""One precision setting: "fp32" is float32 everywhere (even inside a caller's autocast), "bf16" really is bf16.

Forward hooks on a linear layer of the image encoder's bulk, on each of the encoder parts "auto" keeps in
float32 (``devices.ENCODER_EXACT_PARTS``), on the memory attention and on the mask decoder record the dtype each
one computed in, so the test sees every model call of the predictor and of propagation, not only the outputs.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_granseg.devices import autocast_dtype, encoder_policy
from napari_granseg.engine.interactive import GranularityPredictor
from napari_granseg.engine.propagate import ObjectPrompt, propagate
from napari_granseg.synthetic import nested_cells_scene, nested_cells_stack
from napari_granseg.zoo import load_model

#: a linear layer inside each part (residual streams stay float32 under autocast; the matmuls do not).
#: The tiny Hiera has stages [1, 1, 2, 1]: block 2 opens the third stage.
ENCODER = "image_encoder.trunk.blocks.2.mlp.layers.0"
#: one module of each encoder part "auto" keeps in float32, in the order of devices.ENCODER_EXACT_PARTS
ENCODER_EXACT = ("image_encoder.trunk.patch_embed.proj", "image_encoder.trunk.blocks.0.attn.qkv",
                 "image_encoder.trunk.blocks.2.attn.proj", "image_encoder.trunk.blocks.2.proj",
                 "image_encoder.neck.convs.0.conv", "sam_mask_decoder.conv_s0")
MEMORY = "memory_attention.layers.0.self_attn.q_proj"
DECODER = "sam_mask_decoder.transformer.layers.0.self_attn.q_proj"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model(None, kind="unsamv2", config="granseg_tiny.yaml", device="cpu")


@pytest.fixture(scope="module")
def scene():
    return nested_cells_scene(size=96, seed=4)


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return _first_tensor(next(iter(out.values())))
    return _first_tensor(out[0])


class DtypeHooks:
    """Records the output dtype of the named submodules at every call."""

    def __init__(self, module, names):
        self.seen = {n: [] for n in names}
        self.handles = [module.get_submodule(n).register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name):
        return lambda _m, _i, out: self.seen[name].append(_first_tensor(out).dtype)

    def __enter__(self):
        return self.seen

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def _no_hooks_left(model) -> bool:
    return not any(m._forward_pre_hooks or m._forward_hooks for m in model.module.modules())


def _predict(model, scene, precision):
    pred = GranularityPredictor(model, precision=precision, cache_size=1)
    pred.set_image(scene.image)
    r, c = scene.centers[0]
    return pred.predict([[c, r]], [1], granularity=[0.2, 0.9], return_logits=True)


def test_fp32_ignores_an_outer_autocast_bit_for_bit_and_bf16_differs(model, scene):
    names = (ENCODER, *ENCODER_EXACT, DECODER)
    with DtypeHooks(model.module, names) as seen:
        plain = _predict(model, scene, "fp32")
    assert all(set(v) == {torch.float32} for v in seen.values()), seen
    with DtypeHooks(model.module, names) as seen, torch.autocast("cpu", dtype=torch.bfloat16):
        wrapped = _predict(model, scene, "fp32")
    assert all(set(v) == {torch.float32} for v in seen.values()), seen
    for a, b in zip(plain, wrapped):
        np.testing.assert_array_equal(a, b)
    with DtypeHooks(model.module, names) as seen:
        half = _predict(model, scene, "bf16")
    assert all(set(v) == {torch.bfloat16} for v in seen.values()), seen
    assert half[0].dtype == np.float32 and np.isfinite(half[0]).all()
    assert not np.array_equal(plain[0], half[0])
    # "auto": the encoder's bulk in bf16 where this CPU has native bf16; its exact parts (stride-4 path,
    # residual projections, neck) and the decoder always in float32, even inside a caller's bf16 autocast
    with DtypeHooks(model.module, names) as seen, torch.autocast("cpu", dtype=torch.bfloat16):
        auto = _predict(model, scene, "auto")
    encoder = autocast_dtype("cpu", "auto", "encoder") or torch.float32
    assert set(seen[ENCODER]) == {encoder}, seen
    assert all(set(seen[n]) == {torch.float32} for n in (*ENCODER_EXACT, DECODER)), seen
    assert _no_hooks_left(model), "the float32 parts' hooks must live for one encoder call only"
    if encoder == torch.float32:
        np.testing.assert_array_equal(auto[0], plain[0])
    else:
        assert not np.array_equal(auto[0], half[0]) and not np.array_equal(auto[0], plain[0])


def test_embeddings_of_different_precisions_are_cached_apart(model, scene, tmp_path):
    a = GranularityPredictor(model, precision="fp32", disk_cache_dir=tmp_path)
    b = GranularityPredictor(model, precision="bf16", disk_cache_dir=tmp_path)
    a.set_image(scene.image)
    assert not b.is_cached(scene.image)
    b.set_image(scene.image)
    assert len(list(tmp_path.glob("*.pt"))) == 2
    assert not torch.equal(a._features["image_embed"], b._features["image_embed"])
    # "auto" runs the encoder's bulk as "bf16" does but some parts in float32: its own entry wherever
    # its encoder differs from both (CPUs with native bf16), fp32's entry where "auto" means fp32
    c = GranularityPredictor(model, precision="auto", disk_cache_dir=tmp_path)
    assert not c.is_cached(scene.image) or encoder_policy("cpu", "auto") == encoder_policy("cpu", "fp32")
    c.set_image(scene.image)
    assert len(list(tmp_path.glob("*.pt"))) == len({encoder_policy("cpu", p) for p in ("fp32", "bf16", "auto")})


def test_propagation_fp32_ignores_an_outer_autocast_and_bf16_runs_in_bf16(model):
    stack, scenes = nested_cells_stack(n_slices=2, size=64)
    r, c = scenes[1].centers[0]
    prompt = ObjectPrompt(frame=1, points=[[c, r]], labels=[1])
    names = (ENCODER, *ENCODER_EXACT, MEMORY, DECODER)
    with DtypeHooks(model.module, names) as seen:
        plain = propagate(model, stack, prompt, granularity=0.5, precision="fp32")
    assert all(set(v) == {torch.float32} for v in seen.values()), seen
    assert seen[MEMORY], "memory attention never ran"
    with DtypeHooks(model.module, names) as seen, torch.autocast("cpu", dtype=torch.bfloat16):
        wrapped = propagate(model, stack, prompt, granularity=0.5, precision="fp32")
    assert all(set(v) == {torch.float32} for v in seen.values()), seen
    np.testing.assert_array_equal(plain, wrapped)
    with DtypeHooks(model.module, names) as seen:
        propagate(model, stack, prompt, granularity=0.5, precision="bf16")
    assert all(set(v) == {torch.bfloat16} for v in seen.values()), seen
    with DtypeHooks(model.module, names) as seen:  # "auto": only the encoder's bulk in bf16 (where it is native)
        propagate(model, stack, prompt, granularity=0.5, precision="auto")
    assert set(seen[ENCODER]) == {autocast_dtype("cpu", "auto", "encoder") or torch.float32}, seen
    assert all(set(seen[n]) == {torch.float32} for n in (*ENCODER_EXACT, MEMORY, DECODER)), seen
    assert _no_hooks_left(model)


@pytest.mark.parametrize("bad", ["fp16", "FP32", None, 32])
def test_unknown_precision_is_an_error(model, bad):
    with pytest.raises(ValueError, match="precision=.* is not one of"):
        GranularityPredictor(model, precision=bad)
    with pytest.raises(ValueError, match="precision=.* is not one of"):
        propagate(model, np.zeros((2, 32, 32), np.uint8), ObjectPrompt(frame=0, points=[[1, 1]]), precision=bad)


@pytest.mark.skipif(autocast_dtype("cpu", "auto", "encoder") is None,
                    reason="no native bf16 on this CPU: 'auto' is float32 throughout and installs no hooks")
def test_auto_float32_parts_do_not_touch_another_threads_call(model, scene):
    """The hooks that keep "auto"'s exact parts in float32 act only in the thread that encodes."""
    conv = model.module.sam_mask_decoder.conv_s0
    seen = {}

    def other_thread():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            seen["other"] = conv(torch.randn(1, conv.in_channels, 4, 4)).dtype

    def during_encoding(_module, _args):  # runs in the middle of the encoder call, while the hooks are on
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()

    handle = model.module.get_submodule(ENCODER).register_forward_pre_hook(during_encoding)
    try:
        with DtypeHooks(model.module, ("sam_mask_decoder.conv_s0",)) as own:
            _predict(model, scene, "auto")
    finally:
        handle.remove()
    assert seen["other"] == torch.bfloat16  # the other thread's own autocast, untouched
    assert own["sam_mask_decoder.conv_s0"] == [torch.bfloat16, torch.float32]  # its call, then the encoder's

"""UnSAMv2 modules: spec formulas, key layout, LoRA merge, checkpoint round trip (random weights)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_granseg.checkpoints import CheckpointError, save_checkpoint
from napari_granseg.engine.interactive import GranularityPredictor
from napari_granseg.models.lora import LoRALinear
from napari_granseg.models.unsamv2 import (
    build_unsamv2, count_new_parameters, lora_target_names, merge_model_lora, unsamv2_state_dict,
)
from napari_granseg.synthetic import nested_cells_scene
from napari_granseg.zoo import load_model

TINY = "granseg_tiny.yaml"


def _randomize_lora(model: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            with torch.no_grad():
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=gen) * 0.05)


def _logits(model, image, g=(0.1, 0.5, 1.0)):
    pred = GranularityPredictor(model, precision="fp32")  # exact arithmetic: the comparisons below are tight
    pred.set_image(image)
    logits, ious, low = pred.predict([[40.0, 50.0]], [1], granularity=list(g), return_logits=True)
    return logits, ious, low


@pytest.fixture(scope="module")
def scene():
    return nested_cells_scene(size=96, n_cells=1, seed=3)


def test_fourier_embedding_matches_spec_formula():
    model = build_unsamv2(TINY)
    emb = model.sam_prompt_encoder.fourier_embedder
    g = 0.37
    got = emb.fourier(torch.tensor([g]))[0].double()
    expected = []
    for k in range(64):
        w = 100.0 ** (k / 64)
        expected += [math.sin(w * g), math.cos(w * g)]
    assert got.shape == (128,)
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1e-5)


def test_granularity_token_sits_after_points_and_before_boxes():
    model = build_unsamv2(TINY)
    pe = model.sam_prompt_encoder
    pts = (torch.tensor([[[10.0, 20.0]]]), torch.tensor([[1]]))
    sparse, _ = pe(points=pts, boxes=None, masks=None, granularity=0.4)
    assert sparse.shape[1] == 3  # point, pad, g
    g_tok = pe.embed_granularity(0.4, 1)[0, 0]
    assert torch.allclose(sparse[0, 2], g_tok)
    box = torch.tensor([[5.0, 5.0, 30.0, 30.0]])
    sparse_b, _ = pe(points=pts, boxes=box, masks=None, granularity=0.4)
    assert sparse_b.shape[1] == 1 + 1 + 2  # point (no pad), g, two box corners
    assert torch.allclose(sparse_b[0, 1], g_tok)
    sparse_none, _ = pe(points=pts, boxes=None, masks=None, granularity=None)
    assert sparse_none.shape[1] == 2


def test_key_layout_and_parameter_counts_match_spec_on_sam21_small():
    model = build_unsamv2("configs/sam2.1/sam2.1_hiera_s.yaml", lora=True)
    keys = set(model.state_dict())
    for k in ["sam_prompt_encoder.granularity_embedding.weight",
              "sam_prompt_encoder.fourier_embedder.mlp.mlp.0.weight",
              "sam_prompt_encoder.fourier_embedder.mlp.mlp.3.weight",
              "sam_prompt_encoder.fourier_embedder.mlp.mlp.6.bias",
              "sam_mask_decoder.gra_token.weight",
              "sam_mask_decoder.gra_output_token_mlp.layers.2.weight",
              "sam_mask_decoder.transformer.layers.0.self_attn.q_proj.original_layer.weight",
              "sam_mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj.lora_A",
              "sam_mask_decoder.transformer.final_attn_token_to_image.v_proj.lora_B"]:
        assert k in keys, k
    sd = model.state_dict()
    assert sd["sam_prompt_encoder.fourier_embedder.mlp.mlp.0.weight"].shape == (192, 128)
    assert sd["sam_prompt_encoder.fourier_embedder.mlp.mlp.6.weight"].shape == (256, 192)
    assert len(lora_target_names(model)) == 28
    assert count_new_parameters(model) == {"granularity_encoder": 111_488, "granularity_token": 140_064,
                                           "lora": 94_208}


def test_merged_lora_equals_unmerged_forward(scene):
    torch.manual_seed(0)
    model = build_unsamv2(TINY, lora=True)
    _randomize_lora(model)
    before, ious_b, _ = _logits(model, scene.image)
    assert merge_model_lora(model) == 28
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    after, ious_a, _ = _logits(model, scene.image)
    assert np.abs(before - after).max() < 1e-4 * max(1.0, np.abs(before).max())
    assert np.allclose(ious_b, ious_a, atol=1e-5)


def test_upstream_layout_checkpoint_round_trip_gives_identical_outputs(tmp_path, scene):
    torch.manual_seed(1)
    model = build_unsamv2(TINY, lora=True)
    _randomize_lora(model, seed=2)
    state = unsamv2_state_dict(model)
    assert any(".original_layer." in k for k in state) and any(k.endswith("lora_A") for k in state)
    state["sam_prompt_encoder.granularity_round_embedding.weight"] = torch.zeros(10, 64)  # tolerated leftover
    path = save_checkpoint(state, tmp_path / "unsamv2_upstream_layout.pt")
    loaded = load_model(path, kind="unsamv2", config=TINY, device="cpu")
    merge_model_lora(model)  # the reference: the same weights, merged in memory
    ref, ref_iou, ref_low = _logits(model, scene.image)
    got, got_iou, got_low = _logits(loaded, scene.image)
    np.testing.assert_array_equal(ref, got)
    np.testing.assert_array_equal(ref_iou, got_iou)
    np.testing.assert_array_equal(ref_low, got_low)


def test_batched_granularities_equal_one_at_a_time(scene):
    torch.manual_seed(4)
    model = build_unsamv2(TINY)
    pred = GranularityPredictor(model, precision="fp32")
    pred.batch_granularities = True  # force the one-pass batch (the CPU default loops)
    pred.set_image(scene.image)
    gs = [0.1, 0.25, 0.5, 0.75, 1.0]
    batched, ious, low = pred.predict([[30.0, 40.0]], [1], granularity=gs, return_logits=True)
    assert batched.shape == (5, 96, 96)
    for i, g in enumerate(gs):
        single, iou1, low1 = pred.predict([[30.0, 40.0]], [1], granularity=g, return_logits=True)
        assert np.abs(single[0] - batched[i]).max() < 1e-5
        assert abs(iou1[0] - ious[i]) < 1e-5
    # and the granularity really changes the output
    assert np.abs(batched[0] - batched[-1]).max() > 1e-4


def test_unknown_key_and_missing_key_errors_name_the_keys(tmp_path):
    model = build_unsamv2(TINY)
    state = unsamv2_state_dict(model)
    state["sam_mask_decoder.some_new_head.weight"] = torch.zeros(3)
    bad = save_checkpoint(state, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="unexpected keys.*some_new_head"):
        load_model(bad, kind="unsamv2", config=TINY)
    state = unsamv2_state_dict(model)
    del state["sam_mask_decoder.gra_token.weight"]
    missing = save_checkpoint(state, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="missing keys.*gra_token"):
        load_model(missing, kind="unsamv2", config=TINY)


def test_granularity_context_is_per_thread_and_not_a_module_attribute():
    """Two threads in different granularity contexts decode at the same time: each sees its own g.

    The barrier makes the interleaving fixed: both threads have entered their context before either
    decodes, so a value shared between threads would give one of them the other's g.
    """
    import threading

    from napari_granseg.models.unsamv2 import current_granularity

    model = build_unsamv2(TINY)
    pe = model.sam_prompt_encoder
    assert not hasattr(pe, "granularity")
    pts = (torch.tensor([[[10.0, 20.0]]]), torch.tensor([[1]]))
    barrier = threading.Barrier(2, timeout=30)
    results: dict[float, tuple] = {}

    def decode(g: float) -> None:
        with torch.no_grad(), model.granularity_context(g):
            barrier.wait()  # both contexts are set now
            sparse, _ = pe(points=pts, boxes=None, masks=None)  # no granularity argument: the scoped value
            seen = current_granularity()
            barrier.wait()  # neither leaves its context before both have decoded
        results[g] = (sparse[0, 2].clone(), seen)

    threads = [threading.Thread(target=decode, args=(g,)) for g in (0.2, 0.9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == [0.2, 0.9]
    with torch.no_grad():
        for g, (token, seen) in results.items():
            assert seen == g
            torch.testing.assert_close(token, pe.embed_granularity(g, 1)[0, 0], rtol=0, atol=0)
        assert not torch.equal(results[0.2][0], results[0.9][0])
    assert current_granularity() is None  # nothing leaks out of the contexts
    with model.granularity_context(0.5):
        with model.granularity_context(0.3):
            assert current_granularity() == 0.3
        assert current_granularity() == 0.5
    assert current_granularity() is None

"""SANSA model: adapter placement and sizes, upstream checkpoint layout, loading and its errors."""
from __future__ import annotations

import pytest
import torch

from napari_granseg.checkpoints import CheckpointError, read_state_dict, save_checkpoint
from napari_granseg.loading import load_sansa
from napari_granseg.models.sansa import (AdaptedMultiScaleBlock, SansaModel, build_sansa_model, is_adapter_key,
                                         sansa_adapter_state_dict)

TINY = "granseg_tiny.yaml"
HIERA_L = "configs/sam2/sam2_hiera_l.yaml"


def _randomise_adapters(model: SansaModel, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_adapter_key(name[len("sam."):]):
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.fixture(scope="module")
def hiera_l_models():
    """Random-weight Hiera-L SANSA models (cf 0.3 and 0.8), built once (~1 s each on CPU)."""
    return {cf: build_sansa_model(HIERA_L, channel_factor=cf) for cf in (0.3, 0.8)}


def test_hiera_l_adapter_layout_matches_upstream(hiera_l_models):
    m = hiera_l_models[0.3]
    assert m.adapted_blocks == list(range(8, 48))
    keys = sorted(sansa_adapter_state_dict(m))
    assert len(keys) == 240
    expected = sorted(f"sam.image_encoder.trunk.blocks.{i}.adapter.{mod}.{p}" for i in range(8, 48)
                      for mod in ("adapter_layer_norm_before", "down_proj", "up_proj") for p in ("weight", "bias"))
    assert keys == expected
    assert m.adapter_parameter_count() == 9_898_385
    assert hiera_l_models[0.8].adapter_parameter_count() == 26_333_537
    # bottleneck = int(dim_in * cf), width = dim_out: block 8 is the stage-2 transition 288 -> 576
    sd = sansa_adapter_state_dict(m)
    assert tuple(sd["sam.image_encoder.trunk.blocks.8.adapter.down_proj.weight"].shape) == (86, 576)
    assert tuple(sd["sam.image_encoder.trunk.blocks.47.adapter.up_proj.weight"].shape) == (1152, 345)
    # SAM 2.0 overrides: no object-score modules; only adapters trainable
    assert not m.sam.pred_obj_scores and not hasattr(m.sam.sam_mask_decoder, "pred_obj_score_head")
    assert m.set_trainable("adapters") == 9_898_385


@pytest.mark.parametrize("cf", [0.3, 0.8])
def test_hiera_l_adapter_file_loads_strictly_and_infers_factor(hiera_l_models, tmp_path, cf):
    src = hiera_l_models[cf]
    _randomise_adapters(src, seed=int(cf * 10))
    state = {"module." + k: v for k, v in sansa_adapter_state_dict(src).items()}  # DDP prefix, as released files
    path = save_checkpoint(state, tmp_path / f"adapter_cf{cf}.pth", epoch=4)
    loaded = load_sansa(HIERA_L, adapter_checkpoint=path)  # channel_factor inferred
    assert loaded.channel_factor == cf
    assert loaded.load_info["adapter_keys"] == 240 and not loaded.load_info["full_model_in_file"]
    for k, v in sansa_adapter_state_dict(src).items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_base_checkpoint_object_score_keys_are_expected_leftovers(tmp_path):
    # a SAM 2.0-style base: built with object scores on, as Meta's checkpoint
    from napari_granseg.models.builder import build_sam2_base

    base = build_sam2_base(TINY, overrides=["++model.pred_obj_scores=true", "++model.pred_obj_scores_mlp=true"])
    path = save_checkpoint(base.state_dict(), tmp_path / "sam2_base.pt")
    m = load_sansa(TINY, base_checkpoint=path)
    left = m.load_info["base_leftover_keys"]
    assert left and all(("pred_obj_score_head" in k or "obj_score_token" in k or "no_obj_ptr" in k) for k in left)
    own = m.sam.state_dict()
    for k, v in base.state_dict().items():
        if k not in left:
            assert torch.equal(own[k], v), k


def test_unusual_shapes_give_per_block_bottlenecks(tmp_path):
    src = SansaModel(build_sansa_model(TINY).sam, bottlenecks={2: 7, 3: 5, 4: 9})
    _randomise_adapters(src)
    path = save_checkpoint(sansa_adapter_state_dict(src), tmp_path / "odd.pth")
    m = load_sansa(TINY, adapter_checkpoint=path)
    assert m.channel_factor is None and m.bottlenecks == {2: 7, 3: 5, 4: 9}


def test_tiny_factor_inference_and_mismatch(tmp_path):
    src = build_sansa_model(TINY, channel_factor=0.3)
    path = save_checkpoint(sansa_adapter_state_dict(src), tmp_path / "a.pth")
    assert load_sansa(TINY, adapter_checkpoint=path).channel_factor == 0.3
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_sansa(TINY, adapter_checkpoint=path, channel_factor=0.8)


def test_zero_up_projection_leaves_sam2_features_unchanged():
    torch.manual_seed(0)
    m = build_sansa_model(TINY)
    plain = build_sansa_model(TINY).sam  # fresh random base; copy m's base into it, without adapters
    from napari_granseg.models.builder import build_sam2_base
    from napari_granseg.models.sansa import SAM20_OVERRIDES

    plain = build_sam2_base(TINY, overrides=SAM20_OVERRIDES)
    plain.load_state_dict({k[4:]: v for k, v in m.state_dict().items() if not is_adapter_key(k[4:])})
    with torch.no_grad():  # non-trivial LayerNorm/down weights, up exactly zero
        for a in m.adapters().values():
            a.adapter_layer_norm_before.weight.normal_()
            a.down_proj.bias.normal_()
    assert all(isinstance(m.sam.image_encoder.trunk.blocks[i], AdaptedMultiScaleBlock) for i in m.adapted_blocks)
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        a, b = m.sam.forward_image(x), plain.forward_image(x)
        for fa, fb in zip(a["backbone_fpn"], b["backbone_fpn"]):
            assert torch.equal(fa, fb)
        # and a non-zero up projection does change them
        for ad in m.adapters().values():
            ad.up_proj.weight.normal_()
        c = m.sam.forward_image(x)
    assert not torch.equal(c["vision_features"], b["vision_features"])


def test_truncated_and_wrong_model_files_give_specific_errors(tmp_path):
    src = build_sansa_model(TINY)
    good = save_checkpoint(sansa_adapter_state_dict(src), tmp_path / "good.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_sansa(TINY, adapter_checkpoint=truncated)
    # a plain SAM 2 checkpoint given as the adapter file
    sam_only = save_checkpoint({k: v for k, v in src.sam.state_dict().items() if not is_adapter_key(k)},
                               tmp_path / "sam2.pt")
    with pytest.raises(CheckpointError, match="no SANSA adapter weights.*plain SAM 2 checkpoint"):
        load_sansa(TINY, adapter_checkpoint=sam_only)
    # adapters of another model (Hiera-L block numbers) into the tiny config
    other = {f"sam.image_encoder.trunk.blocks.{i}.adapter.down_proj.weight": torch.zeros(4, 4) for i in (8, 9)}
    with pytest.raises(CheckpointError, match="do not fit this model"):
        load_sansa(TINY, adapter_checkpoint=save_checkpoint(other, tmp_path / "other.pth"))
    # a file with adapters plus unknown keys
    bad = dict(sansa_adapter_state_dict(src), **{"sam.something_else.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_sansa(TINY, adapter_checkpoint=save_checkpoint(bad, tmp_path / "bad.pth"))


def test_full_model_file_reloads_as_adapter_file_and_as_base(tmp_path):
    src = build_sansa_model(TINY)
    _randomise_adapters(src)
    full = save_checkpoint(src.state_dict(), tmp_path / "full.pt")
    for kw in ({"adapter_checkpoint": full}, {"adapter_checkpoint": full, "base_checkpoint": full}):
        m = load_sansa(TINY, **kw)
        for k, v in src.state_dict().items():
            assert torch.equal(m.state_dict()[k], v), k


def test_state_dicts_build_the_same_model_as_files(tmp_path):
    """The model takes state dicts; the loader reads files: both give identical weights."""
    src = build_sansa_model(TINY, channel_factor=0.3)
    _randomise_adapters(src, seed=5)
    adapters = save_checkpoint(sansa_adapter_state_dict(src), tmp_path / "adapters.pth")
    base = save_checkpoint({k[4:]: v for k, v in src.state_dict().items() if not is_adapter_key(k[4:])},
                           tmp_path / "base.pt")
    from_files = load_sansa(TINY, base_checkpoint=base, adapter_checkpoint=adapters)
    from_states = build_sansa_model(TINY, base_state=read_state_dict(base), adapter_state=read_state_dict(adapters))
    assert from_files.channel_factor == from_states.channel_factor == 0.3
    assert from_files.load_info["adapter_checkpoint"] == str(adapters)
    for k, v in src.state_dict().items():
        assert torch.equal(from_files.state_dict()[k], v), k
        assert torch.equal(from_states.state_dict()[k], v), k

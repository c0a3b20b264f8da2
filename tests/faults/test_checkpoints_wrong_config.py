"""The right checkpoint with the wrong config: the message names the config that fits (read from the tensor
shapes), never torch's size-mismatch dump; the checkpoint file is untouched."""
from __future__ import annotations

import pytest

from napari_granseg import zoo
from napari_granseg.checkpoints import CheckpointError, infer_config, save_checkpoint
from napari_granseg.models.builder import build_sam2_base
from napari_granseg.models.unsamv2 import build_unsamv2, unsamv2_state_dict

TINY = "granseg_tiny.yaml"


@pytest.mark.parametrize("written_with, loaded_with, fits", [
    ("configs/sam2.1/sam2.1_hiera_t.yaml", TINY, "SAM 2.1 Hiera-Tiny: pass config='configs/sam2.1/sam2.1_hiera_t.yaml'"),
    ("configs/sam2/sam2_hiera_t.yaml", "configs/sam2.1/sam2.1_hiera_t.yaml",
     "SAM 2.0 Hiera-Tiny: pass config='configs/sam2/sam2_hiera_t.yaml'"),
])
def test_sam2_checkpoint_with_wrong_config_names_the_right_one(tmp_path, written_with, loaded_with, fits):
    path = save_checkpoint(build_sam2_base(written_with).state_dict(), tmp_path / "model.pt")
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as err:
        zoo.load_model(path, kind="sam2", config=loaded_with)
    msg = str(err.value)
    assert fits in msg and f"(not {loaded_with!r})" in msg
    assert "size mismatch for" not in msg  # torch's own dump
    assert path.read_bytes() == before


def test_unsamv2_checkpoint_with_the_default_config_points_to_its_own(tmp_path):
    path = save_checkpoint(unsamv2_state_dict(build_unsamv2(TINY)), tmp_path / "tiny_unsamv2.pt")
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as err:
        zoo.load_model(path, kind="unsamv2")  # default config: SAM 2.1 Hiera-S
    msg = str(err.value)
    assert "tensors have other shapes, e.g. ['image_encoder." in msg
    assert "pass config='granseg_tiny.yaml'" in msg and "size mismatch for" not in msg
    assert path.read_bytes() == before


def test_infer_config_reads_size_and_version_from_shapes():
    import torch

    name, description = infer_config(build_sam2_base(TINY).state_dict())  # a real model's keys
    assert name == TINY and "tiny" in description

    def trunk(dim, blocks, sam21, prefix=""):  # only the keys the inference reads
        state = {f"{prefix}image_encoder.trunk.pos_embed": torch.zeros(1, dim, 7, 7),
                 f"{prefix}image_encoder.trunk.blocks.{blocks - 1}.norm1.weight": torch.zeros(dim)}
        if sam21:
            state[f"{prefix}obj_ptr_tpos_proj.weight"] = torch.zeros(1)
        return state

    assert infer_config(trunk(96, 16, True))[0] == "configs/sam2.1/sam2.1_hiera_s.yaml"
    assert infer_config(trunk(112, 24, False)) == ("configs/sam2/sam2_hiera_b+.yaml", "SAM 2.0 Hiera-Base+")
    assert infer_config(trunk(144, 48, False, prefix="sam."))[0] == "configs/sam2/sam2_hiera_l.yaml"  # SANSA
    assert infer_config(trunk(100, 16, True)) is None  # no known config has this trunk
    assert infer_config({"no_mem_embed": torch.zeros(1)}) is None

"""SANSA input as the official code builds it: uint8 through PIL + torchvision, masks nearest then bilinear,
prompts scaled via the square frame, logits read out via the square frame; 16-bit keeps the float path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from napari_granseg.engine.fewshot_input import (FewShotError, preprocess_image, preprocess_mask, reference_prompt,
                                                 upsample_logits)
from napari_granseg.engine.normalize import model_input


def _upstream_image(image: np.ndarray, size: int, model_size: int) -> torch.Tensor:
    """The official pipeline, written out independently: PIL resize, ToTensor, Normalize, model's resize."""
    pipeline = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                                   transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    x = pipeline(Image.fromarray(image).convert("RGB"))[None]
    return F.interpolate(x, (model_size, model_size), mode="bilinear", align_corners=False, antialias=True)


@pytest.mark.parametrize("shape", [(70, 93, 3), (61, 50)])
def test_uint8_input_is_upstream_bit_for_bit(shape):
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    ours = preprocess_image(image, 256, 120)
    assert ours.dtype == torch.float32 and ours.shape == (1, 3, 256, 256)
    assert torch.equal(ours, _upstream_image(image, 120, 256))
    if image.ndim == 2:  # gray -> RGB by repetition: the same intensities in all three channels
        mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        plain = ours[0] * std + mean
        assert torch.allclose(plain[0], plain[1], atol=1e-6) and torch.allclose(plain[0], plain[2], atol=1e-6)
        assert torch.equal(ours, preprocess_image(np.repeat(image[..., None], 3, axis=-1), 256, 120))
    # the square resize really happens on uint8 (PIL): resizing in float instead differs, slightly
    rgb = torch.from_numpy(np.ascontiguousarray(np.atleast_3d(image), np.float32)).permute(2, 0, 1)[None] / 255
    in_float = F.interpolate(rgb.expand(1, 3, -1, -1), (120, 120), mode="bilinear", align_corners=False, antialias=True)
    in_float = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])(in_float)
    in_float = F.interpolate(in_float, (256, 256), mode="bilinear", align_corners=False, antialias=True)
    diff = (in_float - ours).abs().max()
    assert 0 < diff < 0.05


def test_rgba_drops_alpha_and_no_pre_resize_goes_straight_to_model_size():
    rgb = np.random.default_rng(2).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((40, 48, 1), 7, np.uint8)], -1)
    assert torch.equal(preprocess_image(rgba, 256, 120), preprocess_image(rgb, 256, 120))
    direct = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])(transforms.ToTensor()(rgb))[None]
    expected = F.interpolate(direct, (256, 256), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(preprocess_image(rgb, 256, None), expected)


def test_16bit_keeps_the_float_path_with_one_range():
    img = np.random.default_rng(3).integers(100, 4000, (64, 64), dtype=np.uint16)
    expected = F.interpolate(model_input(img, 120, intensity=(0.0, 5000.0)), (256, 256), mode="bilinear",
                             align_corners=False, antialias=True)
    assert torch.equal(preprocess_image(img, 256, 120, intensity=(0.0, 5000.0)), expected)
    # the range decides: a brighter range gives a darker image, the image's own percentiles another one
    assert preprocess_image(img, 256, 120, intensity=(0.0, 65535.0)).mean() < expected.mean()
    assert not torch.equal(preprocess_image(img, 256, 120), expected)


def test_mask_goes_nearest_to_the_square_frame_then_bilinear():
    m = np.zeros((30, 45), bool)
    m[4:9, 10:30] = True
    expected = F.interpolate(torch.from_numpy(m.astype(np.float32))[None, None], (120, 120), mode="nearest")
    expected = F.interpolate(expected, (256, 256), mode="bilinear", align_corners=False, antialias=True) > 0
    out = preprocess_mask(m, 256, image_size=120)
    assert out.dtype == torch.bool and torch.equal(out, expected)
    assert not torch.equal(out, preprocess_mask(m, 256))  # without the nearest step the edges differ


def test_points_and_box_scale_through_the_square_frame():
    p = reference_prompt((50, 100), 256, 120, points=[[10.0, 20.0]], box=[0, 5, 100, 50])["point_inputs"]
    xy = p["point_coords"][0].numpy()
    s = np.float32(256 / 120)
    assert np.array_equal(xy[0], np.array([10 * np.float32(120 / 100) * s, 20 * np.float32(120 / 50) * s], np.float32))
    assert np.allclose(xy[1:], [[0, 25.6], [256, 256]], atol=1e-4)
    assert p["point_labels"][0].tolist() == [1, 2, 3]
    with pytest.raises(FewShotError, match="NaN"):
        reference_prompt((50, 100), 256, 120, points=[[np.nan, 3.0]])


def test_readout_goes_through_the_square_frame():
    low = torch.randn(1, 1, 16, 16)
    via = F.interpolate(F.interpolate(low, (120, 120), mode="bilinear", align_corners=False), (50, 70),
                        mode="bilinear", align_corners=False)[0, 0]
    assert torch.equal(upsample_logits(low, (50, 70), 120), via)
    direct = F.interpolate(low, (50, 70), mode="bilinear", align_corners=False)[0, 0]
    assert torch.equal(upsample_logits(low, (50, 70), None), direct)
    assert not torch.equal(via, direct)

"""The few-shot engine at precision="fp32" computes the official SANSA episode.

``_upstream_episode`` re-implements the official inference (github ClaudiaCuttano/SANSA: datasets/coco.py,
models/sansa/sansa.py and its own copy of SAM2Base) from the facts in /work/shared/spec/sansa.md, on the model's
submodules only (trunk, neck, prompt encoder, mask decoder, memory encoder, memory attention), without the
engine's code and without sam2's ``track_step``:

- images: PIL RGB -> torchvision Resize((S, S)) on uint8 -> ToTensor -> Normalize -> bilinear antialiased
  resize to the model size; ONE backbone pass over all k + 1 frames (upstream batches the episode);
- mask prompts: the uint8 mask nearest to S x S, then bilinear antialiased to the model size, ``> 0``; the
  memory encoder reads the mask as +-10 logits taken down to 1/4 (antialiased) and back up (bilinear); the
  object pointer comes from the decoder fed the raw features and the conv-downsampled mask;
- point / box prompts: coordinates in the S frame times model_size / S, decoder with no memory
  (features + no-memory embedding), single mask; its logits (upsampled) go to the memory encoder as sigmoid;
- target: memory = reference 0 (temporal slot 0) + the frames 1..6 before it in order of increasing recency,
  then the object pointers (reference 0 first, then the most recent ones) with zero positional encoding;
  multimask decoder, the mask with the best predicted IoU.

The models are tiny random SANSAs with a SAM 2.0 configuration (no temporal encoding of object pointers, no
spatial no-object embedding), as the released SANSA checkpoints use.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from napari_granseg.engine.fewshot import FewShotSegmenter
from napari_granseg.models.sansa import build_sansa_model
from napari_granseg.synthetic import shapes_scene

SAM20_STYLE = ("++model.add_tpos_enc_to_obj_ptrs=false", "++model.proj_tpos_enc_in_obj_ptrs=false",
               "++model.use_signed_tpos_enc_to_obj_ptrs=false", "++model.no_obj_embed_spatial=false")
S = 160  # upstream's square pre-resize (640 for 1024 px models; the tiny model takes 256 px)


@pytest.fixture(scope="module")
def sam20_sansa():
    torch.manual_seed(3)
    m = build_sansa_model("granseg_tiny.yaml", overrides=SAM20_STYLE)
    with torch.no_grad():
        for a in m.adapters().values():
            a.up_proj.weight.normal_(0, 0.5)
    assert not m.sam.add_tpos_enc_to_obj_ptrs and m.sam.no_obj_embed_spatial is None
    return m.eval()


@pytest.fixture(scope="module")
def scenes():
    """uint8 RGB scenes (the official code reads 8-bit photographs) and their class-1 masks."""
    out = []
    for s in range(10):
        img, lab = shapes_scene(size=96, n_objects=3, seed=s)
        img8 = (255 * (img - img.min()) / max(float(img.max() - img.min()), 1e-6)).astype(np.uint8)
        rgb = np.stack([img8, np.roll(img8, 3, axis=1), 255 - img8], axis=-1)
        out.append((rgb, (lab == 1).astype(np.uint8)))
    return out


# ------------------------------------------------------------------------------ the official episode, re-done
def _image(image: np.ndarray, model_size: int) -> torch.Tensor:
    pipeline = transforms.Compose([transforms.Resize((S, S)), transforms.ToTensor(),
                                   transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    x = pipeline(Image.fromarray(image).convert("RGB"))
    return F.interpolate(x[None], (model_size, model_size), mode="bilinear", align_corners=False, antialias=True)[0]


def _backbone(sam, images: torch.Tensor):
    """Trunk + neck over the whole episode; returns per level (B, C, h, w) features and positions."""
    feats, pos = sam.image_encoder.neck(sam.image_encoder.trunk(images))
    feats, pos = feats[:-1], pos[:-1]  # the lowest resolution is discarded (scalp)
    feats[0] = sam.sam_mask_decoder.conv_s0(feats[0])
    feats[1] = sam.sam_mask_decoder.conv_s1(feats[1])
    return feats, pos


def _decode(sam, image_embed, high_res, coords, labels, mask_prompt, multimask: bool):
    sparse, dense = sam.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=mask_prompt)
    low, ious, tokens, _ = sam.sam_mask_decoder(
        image_embeddings=image_embed, image_pe=sam.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
        repeat_image=False, high_res_features=high_res)
    low = low.float()
    token = tokens[:, 0]
    if multimask:
        best = int(torch.argmax(ious, dim=-1)[0])
        low = low[:, best:best + 1]
        if tokens.size(1) > 1:
            token = tokens[:, best]
    return low, sam.obj_ptr_proj(token)


def _memory_entry(sam, top_feat, low_res_logits):
    high = F.interpolate(low_res_logits, (sam.image_size, sam.image_size), mode="bilinear", align_corners=False)
    mask_for_mem = torch.sigmoid(high) * sam.sigmoid_scale_for_mem_enc + sam.sigmoid_bias_for_mem_enc
    out = sam.memory_encoder(top_feat, mask_for_mem, skip_mask_sigmoid=True)
    return out["vision_features"], out["vision_pos_enc"][-1]


def _upstream_episode(sam, refs: list[tuple[np.ndarray, dict]], target: np.ndarray) -> torch.Tensor:
    """Target low-res logits (1, 1, h, w) of one official episode. refs: (uint8 image, prompt) where the
    prompt is {"mask": (H, W) uint8} or {"points": [[x, y], ...]} or {"box": [x0, y0, x1, y1]} in pixels."""
    n = sam.image_size
    images = torch.stack([_image(im, n) for im, _ in refs] + [_image(target, n)])
    feats, pos = _backbone(sam, images)
    bank = {}
    for t, (image, prompt) in enumerate(refs):
        top = feats[-1][t:t + 1]
        high_res = [f[t:t + 1] for f in feats[:-1]]
        h, w = image.shape[:2]
        if "mask" in prompt:
            m = torch.from_numpy(prompt["mask"]).float()[None, None]
            m = F.interpolate(m, (S, S), mode="nearest")  # the dataset's nearest resize to the frame size
            m = F.interpolate(m, (n, n), mode="bilinear", align_corners=False, antialias=True) > 0
            logits = m.float() * 20.0 - 10.0
            low = F.interpolate(logits, (n // 4, n // 4), mode="bilinear", align_corners=False, antialias=True)
            no_point = (torch.zeros(1, 1, 2), -torch.ones(1, 1, dtype=torch.int32))
            _, obj_ptr = _decode(sam, top, high_res, *no_point, sam.mask_downsample(m.float()), multimask=False)
        else:
            if "box" in prompt:
                xy, lab = np.asarray(prompt["box"], np.float32).reshape(2, 2), np.array([2, 3], np.int32)
            else:
                xy = np.asarray(prompt["points"], np.float32)
                lab = np.ones(len(xy), np.int32)
            xy = torch.from_numpy(xy * np.array([S / w, S / h], np.float32))  # the dataset's S x S frame
            xy = xy * torch.tensor([n / S, n / S])  # rescale_points: S frame -> model size
            low, obj_ptr = _decode(sam, top + sam.no_mem_embed.view(1, -1, 1, 1), high_res, xy[None],
                                   torch.from_numpy(lab)[None], None, multimask=False)
        mem, mem_pos = _memory_entry(sam, top, low)
        bank[t] = {"mem": mem, "pos": mem_pos, "ptr": obj_ptr}
    k = len(refs)
    memory, memory_pos = [], []
    slots = [(0, bank[0])] + [(p, bank.get(k - (sam.num_maskmem - p))) for p in range(1, sam.num_maskmem)
                              if k - (sam.num_maskmem - p) > 0]
    for p, entry in slots:
        if entry is None:
            continue
        memory.append(entry["mem"].flatten(2).permute(2, 0, 1))
        memory_pos.append(entry["pos"].flatten(2).permute(2, 0, 1) + sam.maskmem_tpos_enc[sam.num_maskmem - p - 1])
    ptrs = [bank[0]["ptr"]] + [bank[t]["ptr"] for t in range(k - 1, 0, -1)][:min(k + 1, sam.max_obj_ptrs_in_encoder) - 1]
    ptrs = torch.stack(ptrs)  # (P, 1, C)
    C, mem_dim = sam.hidden_dim, sam.mem_dim
    ptrs = ptrs.reshape(-1, 1, C // mem_dim, mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
    memory.append(ptrs)
    memory_pos.append(torch.zeros_like(ptrs))  # upstream: no temporal encoding of object pointers
    top = feats[-1][k:k + 1]
    hw = top.shape[-2:]
    curr = top.flatten(2).permute(2, 0, 1)
    curr_pos = pos[-1][k:k + 1].flatten(2).permute(2, 0, 1)
    fused = sam.memory_attention(curr=[curr], curr_pos=[curr_pos], memory=torch.cat(memory),
                                 memory_pos=torch.cat(memory_pos), num_obj_ptr_tokens=ptrs.shape[0])
    fused = fused.permute(1, 2, 0).reshape(1, C, *hw)
    no_point = (torch.zeros(1, 1, 2), -torch.ones(1, 1, dtype=torch.int32))
    low, _ = _decode(sam, fused, [f[k:k + 1] for f in feats[:-1]], *no_point, None, multimask=True)
    return low


# ---------------------------------------------------------------------------------------------- the tests
def _prompts(scenes, kind: str, k: int) -> list[tuple[np.ndarray, dict]]:
    refs = []
    for img, mask in scenes[:k]:
        rows, cols = np.nonzero(mask)
        if kind == "mask":
            refs.append((img, {"mask": mask}))
        elif kind == "points":
            pick = np.linspace(0, len(rows) - 1, 3).astype(int)
            refs.append((img, {"points": np.stack([cols[pick] + 0.5, rows[pick] + 0.5], 1).tolist()}))
        else:
            refs.append((img, {"box": [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]}))
    return refs


@pytest.mark.parametrize("k", [1, 3, 5, 8])
@pytest.mark.parametrize("kind", ["mask", "points", "box"])
def test_fp32_engine_matches_the_official_episode(sam20_sansa, scenes, kind, k):
    refs = _prompts(scenes, kind, k)
    fs = FewShotSegmenter(sam20_sansa, image_size=S, precision="fp32", banks=False)
    for img, prompt in refs:
        fs.add_reference(img, **prompt)
    target = scenes[9][0]
    with torch.inference_mode():
        expected = _upstream_episode(sam20_sansa.sam, refs, target)[0, 0].numpy()
    got = fs.segment(target).logits
    assert got.shape == expected.shape
    assert float(expected.max() - expected.min()) > 0.05  # the logits carry a real signal, not a constant
    assert np.abs(got - expected).max() < 1e-5

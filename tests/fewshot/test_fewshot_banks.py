"""Every reference counts: beyond SAM 2's 7 memory frames the references go into banks sharing reference 0."""
from __future__ import annotations

import numpy as np
import pytest

from napari_granseg.engine.episode import memory_banks


@pytest.mark.parametrize("k", [1, 4, 7])
def test_up_to_seven_references_are_the_official_episode_bit_for_bit(banks, k):
    fs = banks.segmenter(banks.scenes[:k])
    assert len(memory_banks(fs.sam, fs.memory())) == 1
    target = banks.scenes[21][0]
    assert np.array_equal(fs.segment(target).logits, banks.single_bank(fs, target))


def test_banks_share_reference_zero_and_hold_every_reference_once(banks):
    fs = banks.segmenter(banks.scenes[:14])
    memory = fs.memory()
    groups = memory_banks(fs.sam, memory)
    assert [k for _, k in groups] == [6, 5, 5]  # 13 references after the first, in 3 near-equal groups
    ref0 = memory["cond_frame_outputs"][0]
    assert all(list(b["cond_frame_outputs"].values()) == [ref0] for b, _ in groups)
    assert all(sorted(b["non_cond_frame_outputs"]) == list(range(1, k)) for b, k in groups)
    held = [id(o) for b, _ in groups for o in b["non_cond_frame_outputs"].values()]
    assert sorted(held) == sorted(id(memory["non_cond_frame_outputs"][i]) for i in range(1, 14))


def test_ten_references_are_two_fused_episodes(banks):
    """10 references = mean of the logits of the episodes [0, 1..5] and [0, 6..9]."""
    target = banks.scenes[21][0]
    fused = banks.segmenter(banks.scenes[:10]).segment(target)
    a = banks.segmenter(banks.scenes[:6]).segment(target).logits
    b = banks.segmenter([banks.scenes[0]] + banks.scenes[6:10]).segment(target).logits
    assert np.allclose(fused.logits, (a + b) / 2, atol=1e-6)
    assert np.array_equal(fused.mask, fused.probability > 0.5)

"""Fault table rows of the few-shot engine: more than 7 references all count; non-finite prompts are refused."""
from __future__ import annotations

import numpy as np
import pytest

from napari_granseg.engine.fewshot import FewShotError, FewShotSegmenter


def test_every_reference_changes_the_result(banks):
    target = banks.scenes[21][0]
    for k in (10, 20):
        refs = banks.scenes[:k]
        swapped = refs[:3] + [banks.scenes[20]] + refs[4:]  # reference 3 replaced by another labelled scene
        assert not np.array_equal(banks.segmenter(refs).segment(target).logits,
                                  banks.segmenter(swapped).segment(target).logits), k
    # in one memory of 20 frames, reference 3 is neither among the 6 frames before the target nor among the
    # 15 object pointers SAM 2 reads: it changed nothing
    one_memory = banks.single_bank(banks.segmenter(banks.scenes[:20]), target)
    swapped = banks.scenes[:3] + [banks.scenes[20]] + banks.scenes[4:20]
    assert np.array_equal(one_memory, banks.single_bank(banks.segmenter(swapped), target))


def test_nan_or_infinite_prompt_coordinates_are_refused(banks):
    fs = FewShotSegmenter(banks.model, image_size=None)
    img = banks.scenes[0][0]
    for kw in (dict(points=[[np.nan, 3.0]]), dict(scribble=[[1.0, 2.0], [np.inf, 4.0]]),
               dict(box=[0, 0, np.nan, 10])):
        with pytest.raises(FewShotError, match="NaN|x0, y0, x1, y1"):
            fs.add_reference(img, **kw)
    assert fs.num_references == 0

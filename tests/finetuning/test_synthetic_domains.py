"""The synthetic domains the fine-tuning benchmark reports on must be what their docstrings say: a change that
made rods overlap, vanish or stop touching would make the benchmark measure another task."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_granseg.synthetic_domains import dark_blobs_scene, membrane_cells_scene, rod_cells_scene


@pytest.mark.parametrize("scene", [dark_blobs_scene, membrane_cells_scene, rod_cells_scene])
def test_a_scene_is_a_16_bit_image_with_its_instance_labels_and_repeats_by_seed(scene):
    img, lab = scene(size=96, seed=3)
    again, lab_again = scene(size=96, seed=3)
    assert img.dtype == np.uint16 and img.shape == lab.shape == (96, 96)
    assert np.array_equal(img, again) and np.array_equal(lab, lab_again)
    assert not np.array_equal(img, scene(size=96, seed=4)[0])
    ids = np.unique(lab[lab > 0])
    assert len(ids) >= 3
    for k in ids:  # every object is one piece
        assert ndimage.label(lab == k)[1] == 1


def test_rods_are_elongated_brighter_than_the_background_and_some_lie_touching():
    touching, ratios = 0, []
    for seed in range(4):
        img, lab = rod_cells_scene(size=128, seed=seed)
        assert lab.max() == 8
        assert img[lab > 0].mean() > 3 * img[lab == 0].mean()
        for k in range(1, 9):
            rr, cc = np.nonzero(lab == k)
            ev = np.linalg.eigvalsh(np.cov(np.stack([rr, cc]).astype(float)))
            ratios.append(np.sqrt(ev[1] / ev[0]))
            near = ndimage.binary_dilation(lab == k, iterations=2) & (lab > 0) & (lab != k)
            touching += bool(near.any())
    assert min(ratios) > 1.5  # rods, not discs
    assert touching >= 8  # side by side or end to end, as bacteria lie

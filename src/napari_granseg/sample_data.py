"""napari sample data: synthetic scenes the plugin generates (no download) and one real image from scikit-image.

Each function returns napari LayerData tuples, so "File > Open Sample > GranSeg" gives a new user something
to try every widget on without their own data.
"""
from __future__ import annotations

import numpy as np

from .synthetic import NestedScene, nested_cells_scene, nested_cells_stack, shapes_scene

__all__ = ["nested_cells_sample", "nested_cells_sample_scene", "cell_stack_sample", "cell_stack_sample_scenes",
           "shapes_series_sample", "skimage_cell_sample"]


def nested_cells_sample_scene() -> NestedScene:
    """The scene behind :func:`nested_cells_sample`, with its true masks (for the CLI demo and the demo build)."""
    return nested_cells_scene(size=256, n_cells=3, seed=7)


def nested_cells_sample():
    """A 256x256 16-bit image of three cells, each cell > nucleus > nucleolus (click a nucleolus and move the
    granularity: the nucleolus, its nucleus, its cell)."""
    scene = nested_cells_sample_scene()
    return [(scene.image, {"name": "nested cells", "colormap": "gray"}, "image")]


def cell_stack_sample_scenes() -> tuple[np.ndarray, list[NestedScene]]:
    """The stack behind :func:`cell_stack_sample` and each slice's true masks (for the demo build and tests)."""
    return nested_cells_stack(n_slices=12, size=256, seed=3, drift=2.0)


def cell_stack_sample():
    """A 12-slice 16-bit stack of one drifting cell (segment one slice, then propagate)."""
    stack, _ = cell_stack_sample_scenes()
    return [(stack, {"name": "cell stack", "colormap": "gray"}, "image")]


def shapes_series_sample():
    """Eight images of discs (class 1) and triangles (class 2), with labels on the first two as references."""
    rng = np.random.default_rng(11)
    images, labels = [], []
    for _ in range(8):
        img, lab = shapes_scene(size=256, n_objects=5, rng=rng)
        images.append(img)
        labels.append(lab)
    refs = np.zeros_like(np.stack(labels))
    refs[:2] = np.stack(labels[:2])
    return [
        (np.stack(images), {"name": "shapes series", "colormap": "gray"}, "image"),
        (refs, {"name": "reference labels"}, "labels"),
    ]


def skimage_cell_sample():
    """scikit-image's phase-contrast ``cell`` image (ships inside the package, no download)."""
    from skimage import data

    return [(data.cell(), {"name": "cell (scikit-image)", "colormap": "gray"}, "image")]

"""Images larger than the model: tiles at the image's own pixel scale (engine.tiling).

Behaviour is checked with the bundled demo model (256 px input, trained on 256 px-equivalent nested scenes) on
mosaics of scenes whose borders do not line up with the tile grid: a click must give the clicked cell, segment
everything must find every cell once, and a cell lying across a tile border must come out whole.
"""
from __future__ import annotations

import numpy as np
import pytest

from napari_granseg.engine.tiling import (TiledPredictor, TilingError, Window, choose_scale,
                                          segment_everything_tiled, tile_windows)
from napari_granseg.synthetic import nested_cells_scene


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(1, int((a | b).sum()))


def mosaic(rows: int, cols: int, size: int = 256, offset: tuple[int, int] = (37, 53), seed: int = 0):
    """A uint16 mosaic of nested scenes placed at ``offset`` (not on the tile grid); returns the image and a
    list of (cell mask, nucleolus centre (row, col)) in mosaic coordinates."""
    h, w = rows * size + 2 * offset[0], cols * size + 2 * offset[1]
    image = np.full((h, w), 1000, np.uint16)
    cells = []
    for i in range(rows):
        for j in range(cols):
            scene = nested_cells_scene(size=size, n_cells=2, seed=seed + i * cols + j)
            y, x = offset[0] + i * size, offset[1] + j * size
            image[y:y + size, x:x + size] = scene.image
            for mask, (cy, cx) in zip(scene.masks[2], scene.centers):
                full = np.zeros((h, w), bool)
                full[y:y + size, x:x + size] = mask
                cells.append((full, (y + cy, x + cx)))
    return image, cells


@pytest.fixture(scope="module")
def demo_predictor():
    import napari_granseg as gs
    from napari_granseg.engine.interactive import GranularityPredictor

    model = gs.load_model("unsamv2-demo")
    assert model.is_demo and model.image_size == 256
    return GranularityPredictor(model, precision="fp32")


# ------------------------------------------------------------------------------------------ geometry
def test_tiles_cover_the_image_with_the_overlap_asked_for():
    windows = tile_windows((700, 1000), tile=256, overlap=64)
    covered = np.zeros((700, 1000), int)
    for win in windows:
        assert (win.y1 - win.y0, win.x1 - win.x0) == (256, 256)
        covered[win.slices] += 1
    assert covered.min() >= 1
    xs = sorted({win.x0 for win in windows})
    assert xs[-1] == 1000 - 256  # the last column is aligned to the border, no partial tile
    assert all(b - a <= 256 - 64 for a, b in zip(xs, xs[1:]))


def test_a_strip_thinner_than_a_tile_gets_one_row_of_tiles():
    windows = tile_windows((200, 2000), tile=256, overlap=64)
    assert {(w.y0, w.y1) for w in windows} == {(0, 200)}
    assert windows[0].x0 == 0 and windows[-1].x1 == 2000


@pytest.mark.parametrize("shape, expected", [((256, 256), "downscale"), ((400, 400), "downscale"),
                                             ((600, 600), "tile"), ((200, 20000), "tile"), ((256, 700), "tile")])
def test_auto_scale_tiles_large_and_elongated_images(shape, expected):
    assert choose_scale(shape, 256) == expected


def test_bad_tiling_settings_say_what_to_pass():
    with pytest.raises(TilingError, match="overlap"):
        tile_windows((500, 500), tile=256, overlap=300)
    with pytest.raises(TilingError, match="scale"):
        choose_scale((500, 500), 256, scale="big")


# ------------------------------------------------------------------------------------------ behaviour
def test_a_click_on_a_large_mosaic_gives_the_clicked_cell(demo_predictor):
    image, cells = mosaic(3, 3)
    tiler = TiledPredictor(demo_predictor)
    tiler.set_image(image)
    ious_tiled = []
    for mask, (row, col) in cells[::3]:
        masks, _, _ = tiler.predict([[col, row]], [1], granularity=1.0)
        assert masks.shape == (1,) + image.shape
        ious_tiled.append(_iou(masks[0], mask))
    assert min(ious_tiled) > 0.75, ious_tiled
    # the same clicks on the whole image squeezed into one model input miss the cells (what tiling fixes)
    demo_predictor.set_image(image)
    ious_down = [_iou(demo_predictor.predict([[c, r]], [1], granularity=1.0)[0][0], m) for m, (r, c) in cells[::3]]
    assert np.mean(ious_down) < np.mean(ious_tiled) - 0.2


def test_prompts_larger_than_a_tile_are_refused_with_advice(demo_predictor):
    image, _ = mosaic(2, 2)
    tiler = TiledPredictor(demo_predictor)
    tiler.set_image(image)
    with pytest.raises(TilingError, match="downscale"):
        tiler.predict([[10, 10], [500, 500]], [1, 1], granularity=1.0)


def test_an_elongated_strip_is_not_stretched(demo_predictor):
    image, cells = mosaic(1, 6, offset=(0, 11))
    assert choose_scale(image.shape, 256) == "tile"
    tiler = TiledPredictor(demo_predictor)
    tiler.set_image(image)
    ious = [_iou(tiler.predict([[c, r]], [1], granularity=1.0)[0][0], m) for m, (r, c) in cells[::2]]
    assert min(ious) > 0.75, ious


def test_segment_everything_finds_every_cell_once_across_tiles(demo_predictor):
    image, cells = mosaic(2, 2)
    labels = segment_everything_tiled(demo_predictor, image, granularity=1.0, points_per_side=12)
    best = [max((_iou(labels == k, mask) for k in np.unique(labels[mask]) if k), default=0.0) for mask, _ in cells]
    assert min(best) > 0.5 and np.mean(best) > 0.8, best  # every cell found (COCO's IoU 0.5), most of them tight
    # no object twice: one label per cell matches it (inner objects found at g = 1 may sit on it, as without
    # tiling), never two copies from overlapping tiles
    for mask, _ in cells:
        matching = [k for k in np.unique(labels[mask]) if k and _iou(labels == k, mask) > 0.5]
        assert len(matching) == 1
    # the whole mosaic squeezed into one model input finds fewer (what tiling is for)
    from napari_granseg.engine.automatic import segment_everything

    down = segment_everything(demo_predictor, image, granularity=1.0, points_per_side=12)
    found_down = sum(max((_iou(down == k, m) for k in np.unique(down[m]) if k), default=0.0) > 0.5 for m, _ in cells)
    assert found_down < len(cells)


def test_a_cell_across_a_tile_border_is_stitched_whole(demo_predictor):
    scene = nested_cells_scene(size=256, n_cells=1, seed=3)
    cell = scene.masks[2][0]
    rows, cols = np.nonzero(cell)
    # place the scene so that the cell straddles the border x = 256 of the first tile column
    h, w = 256 + 40, 700
    image = np.full((h, w), 1000, np.uint16)
    x = 256 - int((cols.min() + cols.max()) / 2)
    image[20:276, x:x + 256] = scene.image
    truth = np.zeros((h, w), bool)
    truth[20:276, x:x + 256] = cell
    first = tile_windows((h, w), 256, 64)[0]
    assert truth[:, first.x1 - 1].any() and truth[:, first.x1:].any()  # really cut by the first tile
    labels = segment_everything_tiled(demo_predictor, image, granularity=1.0, points_per_side=12)
    ids = [k for k in np.unique(labels[truth]) if k]
    best = max(_iou(labels == k, truth) for k in ids)
    assert best > 0.8


def test_windows_know_what_they_hold():
    win = Window(0, 0, 256, 256)
    assert win.contains(10, 10, 100, 100)
    assert not win.contains(10, 10, 256, 100)

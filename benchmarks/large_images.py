"""Large images: tiles at the image's own pixel scale vs the whole image squeezed into one model input.

For image sides 2k, 4k and 8k px (mosaics of the demo model's 256 px scenes, cells at their trained pixel size),
one click on a cell, measured in the same run for both paths (these machines are noisy):

- time of the first click (embedding + decoder) and of a second click on the same cell (decoder only),
- IoU of the mask with the clicked cell,
- peak resident memory of a fresh process doing that click (each configuration runs in its own subprocess),
- for tiling, the number of tiles and the time to embed one (what "Embed all tiles" costs per tile).

Usage: python benchmarks/large_images.py [--sizes 2048 4096 8192] [--device cpu] [--out FILE]
Model: the bundled demo (random weights would give meaningless IoU); --checkpoint/--config for a real one.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_report  # noqa: E402


def mosaic(side: int, scene: int = 256, seed: int = 0):
    """A (side, side) uint16 mosaic tiled from a 2 x 2 block of nested scenes, and the mask + click of one
    cell near the image centre."""
    from napari_granseg.synthetic import nested_cells_scene

    block = np.full((2 * scene, 2 * scene), 1000, np.uint16)
    block_cells = np.zeros_like(block, dtype=np.int32)
    centers = []
    for i in range(2):
        for j in range(2):
            s = nested_cells_scene(size=scene, n_cells=2, seed=seed + 2 * i + j)
            block[i * scene:(i + 1) * scene, j * scene:(j + 1) * scene] = s.image
            for k, (m, (cy, cx)) in enumerate(zip(s.masks[2], s.centers)):
                block_cells[i * scene:(i + 1) * scene, j * scene:(j + 1) * scene][m] = len(centers) + 1
                centers.append((i * scene + cy, j * scene + cx))
    reps = -(-side // block.shape[0])
    image = np.tile(block, (reps, reps))[:side, :side]
    cells = np.tile(block_cells, (reps, reps))[:side, :side]
    by, bx = (side // 2) // block.shape[0] * block.shape[0], (side // 2) // block.shape[1] * block.shape[1]
    cy, cx = centers[0]
    row, col = by + cy, bx + cx
    truth = np.zeros((side, side), bool)  # the clicked cell only (the block repeats, so do its label ids)
    block_truth = block_cells == block_cells[int(cy), int(cx)]
    truth[by:by + block.shape[0], bx:bx + block.shape[1]] = block_truth[:side - by, :side - bx]
    return image, truth, (row, col)


def one(side: int, mode: str, device: str, checkpoint: str | None, config: str | None) -> dict:
    import napari_granseg as gs
    from napari_granseg.engine.interactive import GranularityPredictor
    from napari_granseg.engine.tiling import TiledPredictor

    image, truth, (row, col) = mosaic(side)
    model = (gs.load_model(checkpoint, kind="unsamv2", config=config, device=device) if checkpoint
             else gs.load_model("unsamv2-demo", device=device))
    pred = GranularityPredictor(model)
    engine = TiledPredictor(pred) if mode == "tile" else pred
    t0 = time.perf_counter()
    engine.set_image(image)
    masks, _, _ = engine.predict([[col, row]], [1], granularity=1.0)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine.predict([[col, row]], [1], granularity=0.5)
    second = time.perf_counter() - t0
    iou = float((masks[0] & truth).sum() / max(1, (masks[0] | truth).sum()))
    row_out = {"side_px": side, "mode": mode, "first_click_s": first, "next_click_s": second, "cell_iou": iou,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if mode == "tile":
        tiles = engine.windows
        t0 = time.perf_counter()
        n = 0
        for n, _ in engine.iter_embed_all():
            if n >= 4:
                break
        row_out["tiles"] = len(tiles)
        row_out["embed_per_tile_s"] = (time.perf_counter() - t0) / max(1, n)
    return row_out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--config", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--one", nargs=2, metavar=("SIDE", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(int(args.one[0]), args.one[1], args.device, args.checkpoint, args.config)))
        return
    rows = []
    for side in args.sizes:
        for mode in ("downscale", "tile"):
            cmd = [sys.executable, __file__, "--one", str(side), mode, "--device", args.device]
            if args.checkpoint:
                cmd += ["--checkpoint", args.checkpoint, "--config", args.config or ""]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            rows.append(json.loads(out))
    write_report("large_images", rows, ["side_px", "mode", "first_click_s", "next_click_s", "cell_iou",
                                        "peak_rss_mb", "tiles", "embed_per_tile_s"], args.out)


if __name__ == "__main__":
    main()

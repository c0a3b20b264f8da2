"""Fixtures for batch tests: a random-weight tiny UnSAMv2 saved as a checkpoint (so worker processes load the
very same weights), and a folder of small synthetic images with a prompt file."""
from __future__ import annotations

import pytest
import tifffile

from napari_granseg.synthetic import nested_cells_scene


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """Path of a seeded random-weight tiny UnSAMv2 checkpoint (granseg_tiny.yaml)."""
    import torch

    import napari_granseg as gs
    from napari_granseg.checkpoints import save_checkpoint

    torch.manual_seed(0)
    model = gs.load_model(None, kind="unsamv2", config="granseg_tiny.yaml", device="cpu")
    path = tmp_path_factory.mktemp("ckpt") / "tiny_unsamv2.pt"
    save_checkpoint(model.module.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def model_ref(tiny_checkpoint):
    from napari_granseg.batch import ModelRef

    return ModelRef(str(tiny_checkpoint), kind="unsamv2", config="granseg_tiny.yaml", device="cpu")


@pytest.fixture(scope="session")
def tiny_model(model_ref):
    """The same weights loaded in this process (through the batch module's per-process cache)."""
    from napari_granseg.batch import worker_model

    return worker_model(model_ref.resolved())


def make_folder(path, n=4, size=96, seed=0):
    """n synthetic images a_000.tif ... and prompts.csv (one positive click per nucleolus, no object ids)."""
    path.mkdir(parents=True, exist_ok=True)
    lines = ["image,row,col"]
    scenes = {}
    for i in range(n):
        scene = nested_cells_scene(size=size, n_cells=2, seed=seed + i)
        name = f"img_{i:03d}.tif"
        tifffile.imwrite(path / name, scene.image)
        scenes[name] = scene
        for r, c in scene.centers:
            lines.append(f"{name},{r:.2f},{c:.2f}")
    (path / "prompts.csv").write_text("\n".join(lines) + "\n")
    return scenes


@pytest.fixture
def folder_factory():
    return make_folder


@pytest.fixture
def image_folder(tmp_path):
    """(folder, {name: NestedScene}) with 4 images 96x96 and prompts.csv."""
    folder = tmp_path / "images"
    return folder, make_folder(folder)


@pytest.fixture
def temp_files():
    """temp_files(folder) -> leftover temporary files of atomic writes (must be none)."""
    return lambda folder: [p for p in folder.rglob("*") if p.name.endswith(".part") or p.name.startswith(".")]


def _as_uint8(stack):
    """An 8-bit copy of a 16-bit test stack, scaled by its own range.

    8-bit data keeps its natural range, so each slice gives the model the same input alone (``gs.segment``)
    or as part of the stack: these tests compare against per-slice calls. 16-bit stacks share one range
    across slices; tests/batch/test_batch_stack_intensity.py covers that policy."""
    import numpy as np

    lo, hi = float(stack.min()), float(stack.max())
    return np.round((stack.astype(np.float32) - lo) / max(hi - lo, 1.0) * 255).astype(np.uint8)


@pytest.fixture
def as_uint8():
    return _as_uint8


@pytest.fixture
def image_folder_maker():
    """make_folder(path, n=4, size=96, seed=0) for tests that need several folders."""
    return make_folder

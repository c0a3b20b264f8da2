"""Few-shot episodes: k references + 1 query, all containing the same class.

Sources: the synthetic discs-vs-triangles generator (``shapes_scene``: class 1 discs, class 2 triangles) for
smoke tests and the demo, or a folder of images with label images (each label id > 0 is a class).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["Episode", "SyntheticEpisodes", "FolderEpisodes", "make_episodes", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class Episode:
    """images[t]: (H, W[, 3]); masks[t]: (H, W) bool of ``class_id``; frames 0..T-2 references, T-1 query."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    class_id: int


class SyntheticEpisodes:
    """Episodes of discs (1) or triangles (2) from fresh ``shapes_scene`` images (never repeats)."""

    def __init__(self, size: int = 128, n_objects: Sequence[int] = (2, 4), min_pixels: int = 16):
        self.size, self.n_objects, self.min_pixels = size, tuple(n_objects), min_pixels

    def scene(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        from napari_granseg.synthetic import shapes_scene

        n = int(rng.integers(self.n_objects[0], self.n_objects[-1] + 1))
        return shapes_scene(size=self.size, n_objects=n, rng=rng)

    def sample(self, n_frames: int, rng: np.random.Generator) -> Episode:
        cls = int(rng.integers(1, 3))
        images, masks = [], []
        while len(images) < n_frames:
            img, lab = self.scene(rng)
            m = lab == cls
            if m.sum() >= self.min_pixels:
                images.append(img)
                masks.append(m)
        return Episode(images, masks, cls)


def _read(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    from skimage import io

    return io.imread(path)


class FolderEpisodes:
    """``root/images/*`` with ``root/labels/<same stem>.*`` label images; classes = label ids > 0.

    A class needs at least two images that contain it (a reference and a query).
    """

    def __init__(self, root: str | Path, images_dir: str = "images", labels_dir: str = "labels",
                 min_pixels: int = 16):
        root = Path(root)
        img_dir, lab_dir = root / images_dir, root / labels_dir
        if not img_dir.is_dir() or not lab_dir.is_dir():
            raise FileNotFoundError(f"expected {img_dir} and {lab_dir} (images and label images with the same stems)")
        labels = {p.stem: p for p in lab_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        self.pairs = [(p, labels[p.stem]) for p in sorted(img_dir.iterdir())
                      if p.suffix.lower() in IMAGE_SUFFIXES and p.stem in labels]
        if not self.pairs:
            raise FileNotFoundError(f"no image in {img_dir} has a label image of the same stem in {lab_dir}")
        self.by_class: dict[int, list[int]] = {}
        for i, (_, lab_path) in enumerate(self.pairs):
            lab = np.asarray(_read(lab_path))
            if lab.ndim == 3:
                lab = lab[..., 0]
            ids, counts = np.unique(lab, return_counts=True)
            for c, n in zip(ids, counts):
                if c > 0 and n >= min_pixels:
                    self.by_class.setdefault(int(c), []).append(i)
        self.by_class = {c: v for c, v in self.by_class.items() if len(v) >= 2}
        if not self.by_class:
            raise ValueError(f"no class in {lab_dir} appears in two or more images; few-shot episodes need a "
                             f"reference and a query of the same class")
        self.classes = sorted(self.by_class)

    def sample(self, n_frames: int, rng: np.random.Generator) -> Episode:
        cls = int(rng.choice(self.classes))
        pool = self.by_class[cls]
        idx = rng.choice(pool, size=n_frames, replace=len(pool) < n_frames)
        images, masks = [], []
        for i in idx:
            img_path, lab_path = self.pairs[int(i)]
            lab = np.asarray(_read(lab_path))
            lab = lab[..., 0] if lab.ndim == 3 else lab
            images.append(np.asarray(_read(img_path)))
            masks.append(lab == cls)
        return Episode(images, masks, cls)


def make_episodes(cfg) -> SyntheticEpisodes | FolderEpisodes:
    """The episode source a :class:`SansaTrainConfig` asks for."""
    if cfg.data == "synthetic":
        return SyntheticEpisodes(cfg.scene_size, cfg.n_objects, cfg.min_class_pixels)
    return FolderEpisodes(cfg.data_root, cfg.images_dir, cfg.labels_dir, cfg.min_class_pixels)

"""Few-shot references of a batch run: every pair read and checked at once, before any target is touched.

Why all at once: a problem with one reference (a label image of another size, a colour-coded label image, an
empty label image) would otherwise surface on every target, blamed on the target. Here every problem of
every pair is collected and reported together, each naming its file (reference image and label image), so
the run stops before it writes anything.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..io import read_image

__all__ = ["ReferenceError", "check_reference_pair", "load_references", "label_plane"]


class ReferenceError(ValueError):
    """One or more few-shot reference pairs cannot be used; the message names each file and what to do."""


def label_plane(labels: np.ndarray, path: str | Path = "<labels>") -> np.ndarray:
    """The (H, W) integer class ids of a label image; ValueError naming ``path`` when it holds none.

    A grey label image saved as RGB (all channels equal) is its first channel. A colour-coded one (class 1
    red, class 2 green, ...) is refused, not guessed: which colour is which class id is the user's choice.
    """
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[-1] in (3, 4):
        rgb = labels[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            colours = np.unique(rgb.reshape(-1, 3), axis=0)
            shown = ", ".join(str(tuple(int(v) for v in c)) for c in colours[:6])
            more = f" and {len(colours) - 6} more" if len(colours) > 6 else ""
            raise ValueError(
                f"label image {path} is colour-coded (RGB, {len(colours)} colours: {shown}{more}); few-shot "
                f"needs one class id per pixel (0 = background, 1, 2, ... = classes): save it as a single-channel "
                f"integer image (e.g. a napari Labels layer), one id per class")
        labels = rgb[..., 0]
    if labels.ndim != 2:
        raise ValueError(f"label image {path} has shape {labels.shape}: give one 2D label image (H, W) per "
                         f"reference image")
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if np.issubdtype(labels.dtype, np.floating):
        if not np.isfinite(labels).all() or not np.array_equal(labels, np.round(labels)):
            raise ValueError(f"label image {path} holds non-integer values (dtype {labels.dtype}, e.g. a "
                             f"probability map): give integer class ids (0 = background, 1, 2, ...)")
        labels = labels.astype(np.int64)
    elif not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"label image {path} has dtype {labels.dtype}: give integer class ids")
    if labels.size and labels.min() < 0:
        raise ValueError(f"label image {path} has negative values ({int(labels.min())}): class ids are 0 "
                         f"(background) or positive")
    return labels


def check_reference_pair(image_path: Path, label_path: Path, view: Callable[[np.ndarray], np.ndarray]
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(label plane, image as the model sees it) of one pair; ValueError naming the file at fault."""
    from ..engine.normalize import check_image

    try:
        image = check_image(view(read_image(image_path)))
    except ValueError as err:
        raise ValueError(f"reference image {image_path}: {err}") from None
    labels = label_plane(read_image(label_path), label_path)
    if labels.shape != image.shape[:2]:
        raise ValueError(f"label image {label_path} has shape {labels.shape}, but its reference image "
                         f"{image_path} is {image.shape[:2]}: the label image must be the annotation of this "
                         f"very image (same height and width)")
    if not (labels > 0).any():
        raise ValueError(f"label image {label_path} (of {image_path}) has no object, only background (0): "
                         f"label at least one object, or move this pair out of the reference folders")
    return labels, image


def load_references(pairs: list[tuple[Path, Path]], view: Callable[[np.ndarray], np.ndarray] = lambda x: x
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(label planes, images) of every reference pair, or one :class:`ReferenceError` listing every problem.

    ``view``: the image the model sees (the run's channel choice), applied to every reference image.
    """
    labels, images, problems = [], [], []
    for image_path, label_path in pairs:
        try:
            lab, img = check_reference_pair(Path(image_path), Path(label_path), view)
        except (ValueError, OSError) as err:  # UnreadableImageError is an OSError or ValueError: it names the file
            problems.append(str(err))
            continue
        labels.append(lab)
        images.append(img)
    if problems:
        raise ReferenceError(f"{len(problems)} of {len(pairs)} few-shot reference pairs cannot be used, so no "
                             f"target was segmented:\n  - " + "\n  - ".join(problems))
    return labels, images

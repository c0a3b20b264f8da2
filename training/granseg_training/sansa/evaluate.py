"""Does a few-shot model segment the class it was shown, and not the other one? (synthetic discs/triangles)

Used by the demo build (numbers stored next to the checkpoint), by the test suite's behavioural test and by
hand after training. For each class, a reference scene with that class's mask builds the memory; unseen
target scenes are segmented through :class:`napari_granseg.engine.fewshot.FewShotSegmenter` (the plugin's
path) and the prediction is compared (IoU) with the referenced class and with the other class.

``prompt`` other than "mask" prompts the reference as a person does in the few-shot widget: a click at the
centre of one object of the class ("point"), a box around it ("box") or a stroke across it ("scribble").
"""
from __future__ import annotations

from typing import Any

import numpy as np

from napari_granseg.engine.fewshot import FewShotSegmenter
from napari_granseg.synthetic import shapes_scene
from scipy import ndimage

from ..evaluation.metrics import iou

__all__ = ["CLASS_NAMES", "PERSON_PROMPTS", "class_separation", "one_object_prompt", "format_separation_table"]

CLASS_NAMES = {1: "discs", 2: "triangles"}
PERSON_PROMPTS = ("point", "box", "scribble")


def one_object_prompt(class_mask: np.ndarray, kind: str) -> dict:
    """The reference prompt a person gives for one object of a class: the largest object's centre pixel (the
    interior point farthest from its border), its bounding box, or a horizontal stroke through that point across
    the middle half of the object's width. Keyword arguments for ``FewShotSegmenter.add_reference``."""
    if kind == "mask":
        return {"mask": class_mask}
    parts, n = ndimage.label(class_mask)
    if n == 0:
        raise ValueError("the reference scene has no object of the class")
    largest = parts == 1 + int(np.argmax(ndimage.sum(class_mask, parts, range(1, n + 1))))
    depth = ndimage.distance_transform_edt(largest)
    r, c = np.unravel_index(int(np.argmax(depth)), depth.shape)
    rows, cols = np.nonzero(largest)
    if kind == "point":
        return {"points": [[c + 0.5, r + 0.5]]}
    if kind == "box":
        return {"box": [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]}
    if kind == "scribble":
        inside = np.nonzero(largest[r])[0]
        x0, x1 = inside.min(), inside.max() + 1
        xs = np.linspace(x0 + 0.25 * (x1 - x0), x1 - 0.25 * (x1 - x0), 8)
        return {"scribble": [[x, r + 0.5] for x in xs]}
    raise ValueError(f"prompt={kind!r}: use 'mask' or one of {PERSON_PROMPTS}")


def class_separation(model: Any, n_references: int = 3, n_targets: int = 2, n_objects: int = 3, size: int = 128,
                     seed: int = 98_765, shots: int = 1, precision: str = "fp32",
                     prompt: str = "mask") -> dict[int, tuple[float, float]]:
    """{class: (mean IoU with the referenced class, mean IoU with the other class)} over unseen scenes.

    ``n_references`` reference sets per class (each of ``shots`` scenes), ``n_targets`` targets per set.
    The default seed is one no training episode uses (training draws from its own seeded generator).
    ``precision`` defaults to "fp32" so the numbers describe the weights, not the machine's autocast choice.
    """
    rng = np.random.default_rng(seed)
    scores: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for cls in (1, 2):
        for _ in range(n_references):
            fs = FewShotSegmenter(model, image_size=None, precision=precision)
            for _ in range(shots):
                ref, ref_labels = shapes_scene(size=size, n_objects=n_objects, rng=rng)
                fs.add_reference(ref, **one_object_prompt(ref_labels == cls, prompt))
            for _ in range(n_targets):
                image, labels = shapes_scene(size=size, n_objects=n_objects, rng=rng)
                pred = fs.segment(image).mask
                scores[cls].append((iou(labels == cls, pred), iou(labels == 3 - cls, pred)))
    return {cls: tuple(float(v) for v in np.mean(s, axis=0)) for cls, s in scores.items()}


def format_separation_table(sep: dict[int, tuple[float, float]]) -> str:
    """Markdown: one row per referenced class."""
    lines = ["| referenced class | IoU with it | IoU with the other class |", "|---|---|---|"]
    for cls, (same, other) in sep.items():
        lines.append(f"| {CLASS_NAMES.get(cls, cls)} | {same:.3f} | {other:.3f} |")
    return "\n".join(lines)

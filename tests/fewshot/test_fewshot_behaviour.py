"""The tiny SANSA trained in the session segments the referenced class, not the other one, in unseen images."""
from __future__ import annotations

import numpy as np

from granseg_training.sansa.evaluate import class_separation


def test_training_lowered_the_loss(trained_sansa_run):
    _, history, _ = trained_sansa_run
    first = np.mean([h["loss"] for h in history[:20]])
    last = np.mean([h["loss"] for h in history[-50:]])
    assert last < 0.8 * first


def test_segments_the_referenced_class_not_the_other(trained_sansa):
    """Discs as reference -> discs, triangles as reference -> triangles, in unseen scenes with both classes.

    A model that ignores the reference (it segments one class, or every object, whatever it is shown) fails
    for at least one class: its IoU with the referenced class is then not twice that with the other.
    """
    sep = class_separation(trained_sansa, n_references=3, n_targets=2)  # seed unused by training
    for cls, (same, other) in sep.items():
        assert same > 0.5 and same > 2 * other, (cls, same, other, sep)

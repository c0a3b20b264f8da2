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


def test_a_person_prompt_marks_one_object_of_the_class():
    """The evaluation's point / box / stroke are what a person gives in the few-shot widget: on one object of
    the referenced class (the largest), inside it, never on the other class."""
    from scipy import ndimage

    from granseg_training.sansa.evaluate import PERSON_PROMPTS, one_object_prompt
    from napari_granseg.synthetic import shapes_scene

    _, labels = shapes_scene(size=128, n_objects=4, rng=np.random.default_rng(3))
    discs = labels == 1
    parts, n = ndimage.label(discs)
    largest = parts == 1 + int(np.argmax(ndimage.sum(discs, parts, range(1, n + 1))))
    prompts = {kind: one_object_prompt(discs, kind) for kind in PERSON_PROMPTS}
    (x, y), = prompts["point"]["points"]
    assert largest[int(y), int(x)]
    x0, y0, x1, y1 = prompts["box"]["box"]
    rows, cols = np.nonzero(largest)
    assert (x0, y0, x1, y1) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    assert all(largest[int(yy), int(xx)] for xx, yy in prompts["scribble"]["scribble"])
    assert np.array_equal(one_object_prompt(discs, "mask")["mask"], discs)


def test_the_demo_engine_says_once_that_it_reads_label_references(caplog):
    """From a script (the napari console) as in the widget: a click, box or stroke reference on the bundled demo
    logs what to do instead, once per set of references; a mask reference, or a non-demo model, says nothing."""
    import logging

    from napari_granseg import zoo
    from napari_granseg.engine.fewshot import FewShotSegmenter
    from napari_granseg.synthetic import shapes_scene

    image, labels = shapes_scene(size=64, n_objects=3, rng=np.random.default_rng(0))
    demo = zoo.load_model("sansa-demo", device="cpu")
    fs = FewShotSegmenter(demo, image_size=None)
    with caplog.at_level(logging.WARNING, logger="napari_granseg.engine.fewshot"):
        fs.add_reference(image, mask=labels == 1)
        assert "reads Labels references" not in caplog.text
        fs.clear_references()
        fs.add_reference(image, points=[[10.0, 10.0]])
        fs.add_reference(image, box=[0.0, 0.0, 20.0, 20.0])
    assert caplog.text.count("reads Labels references") == 1
    caplog.clear()
    plain = FewShotSegmenter(demo.module, image_size=None)  # a bare module: not known to be the demo
    with caplog.at_level(logging.WARNING, logger="napari_granseg.engine.fewshot"):
        plain.add_reference(image, points=[[10.0, 10.0]])
    assert "reads Labels references" not in caplog.text

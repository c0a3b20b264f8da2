"""The widgets' fields (and the sessions behind them, which scripts drive too) check values with the same rule
the API and the CLI use: a word, a list, NaN, a fraction or a value out of range gets one clear message
naming it, the same text as the API's, never a numpy/torch error and never a silent clip or ``int()``.
Driven through the Qt-free sessions, as the docks call them."""
from __future__ import annotations

import numpy as np
import pytest

from napari_granseg.batch import Job
from napari_granseg.engine.automatic.settings import validate_overrides
from napari_granseg.engine.prompts import as_granularities
from napari_granseg.engine.source import ImagePlan
from napari_granseg.widgets._common import WidgetError
from napari_granseg.widgets._everything_session import parse_granularities
from napari_granseg.widgets._fewshot_session import FewShotRequest, FewShotSession, parse_slices
from napari_granseg.widgets._tasks import SyncRunner
from napari_granseg.widgets.finetune_session import FinetuneSession
from napari_granseg.widgets.interactive.ports import ImmediateTimer
from napari_granseg.widgets.interactive.ports import SyncRunner as PortRunner
from napari_granseg.widgets.interactive.session import InteractiveSession


def api_message(fn) -> str:
    with pytest.raises(ValueError) as info:
        fn()
    return str(info.value)


class NoLayers:
    """A layer port with no layers: the settings below are checked before any layer is needed."""

    def prompt_count(self):
        return 0

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


@pytest.fixture
def session():
    return InteractiveSession(NoLayers(), task_runner=PortRunner(), preview_runner=PortRunner(),
                              model_runner=PortRunner(), debounce=ImmediateTimer)


# ------------------------------------------------------------------------------------------------ granularity
@pytest.mark.parametrize("text, value", [("nan", float("nan")), ("inf", float("inf")), ("5", 5.0), ("0.3, -0", -0.0)])
def test_everything_granularity_text_uses_the_api_rule(text, value):
    with pytest.raises(WidgetError) as info:
        parse_granularities(text)
    assert str(info.value) == api_message(lambda: as_granularities([value]))


@pytest.mark.parametrize("value, expected", [
    ("abc", "is a word, not a number"), (float("nan"), r"\[nan\] is outside \[0.1, 1\]"),
    (5.0, r"\[5.0\] is outside \[0.1, 1\]"), ([0.3], "give one number.*Segment everything"),
    (None, "is not a value"), (True, "is a bool"),
])
def test_interactive_granularity_is_refused_by_name_not_clipped(session, value, expected):
    session.set_granularity(0.4)
    with pytest.raises(WidgetError, match=expected):
        session.set_granularity(value)
    assert session.state.options.granularity == 0.4  # unchanged: a script asking for 5 is told, not given 1
    session.set_granularity(1.0)
    assert session.state.options.granularity == 1.0


# ------------------------------------------------------------------------------------------------ scale and tile
@pytest.mark.parametrize("scale, tile, expected", [
    ("huge", 0, r"scale='huge' is not one of \('auto', 'tile', 'downscale'\)"),
    ("tile", -5, "tile=-5: give the tile size as a whole number of pixels"),
    ("tile", "abc", "tile='abc': give the tile size"), ("tile", 100.7, "tile=100.7: give"),
    ("tile", 3, r"tile=3: .*at least 8"), ("tile", True, "tile=True: give"),
])
def test_interactive_scale_and_tile_share_the_image_plans_rule(session, scale, tile, expected):
    with pytest.raises(WidgetError, match=expected):
        session.set_scale(scale, tile)
    image = np.zeros((32, 32), np.uint8)
    with pytest.raises(ValueError, match=expected):  # gs.segment(scale=, tile=) and the other widgets' rule
        ImagePlan.from_array(image, scale=scale, tile=tile or None)
    with pytest.raises(ValueError, match=expected):  # the batch job (CLI --scale/--tile)
        Job(mode="whole", scale=scale, tile=tile or None)
    assert session.plan.settings.scale == "auto" and session.plan.settings.tile == 0
    session.set_scale("tile", 512.0)  # a whole number given as a float is that number
    assert (session.plan.settings.scale, session.plan.settings.tile) == ("tile", 512)


def test_interactive_precision_uses_the_engines_rule(session):
    with pytest.raises(WidgetError, match=r"precision='fp64' is not one of \('auto', 'fp32', 'bf16'\)"):
        session.set_precision("fp64")
    session.set_precision("fp32")
    assert session.models.precision == "fp32"  # the predictor is built at that precision


# ------------------------------------------------------------------------------------------------ few-shot
@pytest.mark.parametrize("text, expected", [
    ("3-1", r"slice range '3-1' runs backwards .* '1-3'"), ("-2-4", "runs backwards"),
    ("2-", "cannot read slice list"), ("1.5", "cannot read slice list"), ("5-9", r"slices \[8, 9\] are outside"),
])
def test_fewshot_slice_list_never_means_no_slice(text, expected):
    with pytest.raises(WidgetError, match=expected):
        parse_slices(text, 8)


def test_fewshot_negative_ranges_count_from_the_end():
    assert parse_slices("-3--1", 8) == [5, 6, 7] and parse_slices("0, 3, 5-7", 8) == [0, 3, 5, 6, 7]


def test_a_model_of_the_other_task_is_named_before_it_loads():
    """The few-shot model box given an UnSAMv2 name: the run fails at once naming the model and what to type
    (not a TypeError from inside the engine, shown as an internal error)."""
    stack = np.zeros((3, 32, 32), np.uint8)
    labels = np.zeros((3, 32, 32), np.int32)
    labels[0, 8:16, 8:16] = 1
    fewshot = FewShotSession(SyncRunner())
    fewshot.run(FewShotRequest(plan=ImagePlan.from_array(stack), layer_name="series", source_name="refs",
                               labels=labels, model_text="unsamv2-demo"))
    assert fewshot.last_error.startswith("Few-shot: model 'unsamv2-demo' is of kind 'unsamv2': few-shot needs "
                                         "a SANSA model"), fewshot.last_error
    assert fewshot.output is None
    import napari_granseg as gs

    with pytest.raises(ValueError, match="'sansa-demo' is of kind 'sansa': clicks"):
        gs.segment(stack[0], [(10, 10)], model="sansa-demo")


# ------------------------------------------------------------------------------------------------ fine-tuning
@pytest.mark.parametrize("changes, expected", [
    ({"steps": 0}, "steps=0: give a whole number"), ({"steps": 2.5}, "steps=2.5"), ({"steps": "10"}, "steps='10'"),
    ({"granularity": "abc"}, "is a word"), ({"granularity": [0.5, 1.0]}, "fine-tuning takes what your labels"),
    ({"granularity": 5.0}, r"\[5.0\] is outside \[0.1, 1\]"),
])
def test_finetune_session_values_are_checked_before_any_work(changes, expected):
    """The fine-tune dock's session goes through gs.finetune's checks, which come before the images are read
    or a model is loaded (``pairs`` here is not even a list of images)."""
    session = FinetuneSession(**changes)
    with pytest.raises(ValueError, match=expected):
        session.run(pairs=[("not", "images")], cancel=lambda: False)
    import napari_granseg as gs

    kwargs = {"steps": None, "granularity": 1.0, **changes}
    with pytest.raises(ValueError, match=expected):  # the API (and the CLI, which calls it) say the same
        gs.finetune(None, None, **kwargs)


# ------------------------------------------------------------------------------------------------ segment everything
@pytest.mark.parametrize("setting", ["stability_score_thresh", "pred_iou_thresh", "box_nms_thresh"])
def test_a_threshold_above_one_is_refused_not_an_empty_result(setting):
    with pytest.raises(ValueError, match=f"{setting} must be in \\[0, 1\\], got 1.5"):
        validate_overrides({setting: 1.5})
    with pytest.raises(ValueError, match=f"{setting} must be in"):  # CLI --set, before any image is read
        Job(mode="whole", settings={setting: 1.5})


def test_job_granularity_and_precision_use_the_engines_rules():
    with pytest.raises(ValueError, match=r"granularity=\[0.3, 1.0\]: give one number .*one label image per input"):
        Job(mode="whole", granularity=[0.3, 1.0])
    with pytest.raises(ValueError, match="granularity='abc' is a word"):
        Job(mode="whole", granularity="abc")
    with pytest.raises(ValueError, match=r"precision='half' is not one of .*\(CLI: --precision fp32\)"):
        Job(mode="whole", precision="half")

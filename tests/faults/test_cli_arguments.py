"""Arguments of the wrong type or range are refused by name at parsing, before any image is read or written:
the CLI's numbers and device names, --set values, and the API's points and devices."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

import napari_granseg as gs
from napari_granseg.cli import main
from napari_granseg.devices import resolve_device
from napari_granseg.engine.automatic.settings import validate_overrides


def parse_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("flag, value, expected", [
    ("--size", "0", "argument --size: 0 is outside 16..4096"),
    ("--size", "100000", "argument --size: 100000 is outside 16..4096"),
    ("-n", "-1", "argument -n: -1 is outside 1..1000"),
    ("--size", "big", "argument --size: 'big' is not a whole number"),
])
def test_sample_numbers_are_checked_at_parsing(tmp_path, capsys, flag, value, expected):
    err = parse_error(capsys, ["sample", "--out", str(tmp_path / "s"), flag, value])
    assert expected in err
    assert not (tmp_path / "s").exists()


def test_a_device_that_is_not_one_names_the_flag(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((16, 16), np.uint8))
    err = parse_error(capsys, ["segment", str(tmp_path / "a.tif"), "--device", "gpu"])
    assert "argument --device: 'gpu' is not a device: give auto, cpu, cuda, cuda:N or mps" in err
    with pytest.raises(ValueError, match="'gpu' is not a device name"):
        resolve_device("gpu")


def test_a_setting_of_the_wrong_type_fails_before_any_image(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((16, 16), np.uint8))
    rc = main(["segment", str(tmp_path / "a.tif"), "--out", str(tmp_path / "out"), "--set", "points_per_side=abc",
               "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "setting points_per_side='abc' must be a whole number" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("overrides, expected", [
    ({"points_per_side": 16.5}, "points_per_side=16.5 must be a whole number"),
    ({"use_m2m": "yes"}, "use_m2m='yes' must be true or false"),
    ({"pred_iou_thresh": float("nan")}, "pred_iou_thresh=nan must be a number"),
    ({"pointz": 3}, "unknown setting(s) ['pointz']"),
])
def test_settings_are_validated_by_name(overrides, expected):
    with pytest.raises(ValueError) as err:
        validate_overrides(overrides)
    assert expected in str(err.value)


def test_a_click_outside_the_image_is_named_in_row_col_terms():
    image = np.zeros((128, 96), np.uint8)
    with pytest.raises(gs.PromptError, match=r"point \(row 500, col 5\) is outside the image of 128 rows x 96 "
                                             r"columns"):
        gs.segment(image, points=[(500, 5)])
    with pytest.raises(gs.PromptError, match=r"row 3, col 100"):
        gs.segment(np.zeros((2, 128, 96), np.uint8), points=[(1, 3, 100)])

import json

import imageio.v3 as iio
import numpy as np
import pytest

import napari_granseg
from granseg_training.evaluation import cli


def _dataset(tmp_path, disc_fn, n=1):
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "labels").mkdir()
    for i in range(n):
        img = np.random.default_rng(i).integers(0, 255, (41, 41, 3), dtype=np.uint8)
        iio.imwrite(tmp_path / "data" / "images" / f"im{i}.png", img)
        iio.imwrite(tmp_path / "data" / "labels" / f"im{i}.png", disc_fn((41, 41), (20, 20), 8).astype(np.uint8) * 5)
    return tmp_path / "data"


def test_interactive_cli_with_a_fake_model_writes_markdown_and_json(tmp_path, monkeypatch, shape_predictor, disc_fn,
                                                                    capsys):
    data = _dataset(tmp_path, disc_fn, n=2)
    fake = shape_predictor(disc_fn, size=lambda g: round(20 * g))
    monkeypatch.setattr(cli, "_load", lambda args, **kw: object())
    monkeypatch.setattr(cli, "_interactive_predictor", lambda loaded: (fake, False))
    out = tmp_path / "res" / "inter"
    rc = cli.main(["interactive", "--model", "fake.pt", "--kind", "unsamv2", "--dataset", str(data),
                   "--out", str(out), "--quiet"])
    assert rc == 0
    report = json.loads((tmp_path / "res" / "inter.json").read_text())
    s = report["methods"]["fake (oracle g)"]["summary"]
    assert s["num_objects"] == 2 and s["noc"] == {"80": 1.0, "85": 1.0, "90": 1.0} and s["iou_at_1"] == 1.0
    assert s["mean_granularity"] == 0.4
    md = (tmp_path / "res" / "inter.md").read_text()
    assert "| fake (oracle g) | 2 | 1.00 | 1.00 | 1.00 | 0 | 100.0 | 0.40 |" in md
    assert md in capsys.readouterr().out
    assert not list((tmp_path / "res").glob(".*"))  # atomic writes leave no temporary files


def test_interactive_cli_random_unsamv2_against_random_sam2(tmp_path, disc_fn):
    import torch

    torch.manual_seed(0)
    data = _dataset(tmp_path, disc_fn)
    rc = cli.main(["interactive", "--kind", "unsamv2", "--config", "granseg_tiny.yaml", "--device", "cpu",
                   "--dataset", str(data), "--granularity", "0.5", "--max-clicks", "3",
                   "--compare-sam2", "random", "--sam2-config", "granseg_tiny.yaml", "--out", str(tmp_path / "r"),
                   "--quiet"])
    assert rc == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert list(report["methods"]) == ["unsamv2 (random weights) (g=0.5)", "SAM 2"]
    for res in report["methods"].values():
        s = res["summary"]
        assert s["num_objects"] == 1
        assert 1 <= s["noc"]["80"] <= s["noc"]["85"] <= s["noc"]["90"] <= 3
        obj = res["objects"][0]
        assert obj["clicks"][0][:2] == [20, 20]  # the first click is the object's centre for every model
        assert obj["ious"][0] == pytest.approx(s["iou_at_1"])
    assert report["methods"]["SAM 2"]["settings"]["first_click_multimask"] is True


def test_whole_cli_stock_sam2_random(tmp_path, disc_fn):
    data = _dataset(tmp_path, disc_fn)
    rc = cli.main(["whole", "--kind", "sam2", "--config", "granseg_tiny.yaml", "--device", "cpu",
                   "--dataset", str(data), "--points-per-side", "4", "--max-dets", "1,10",
                   "--out", str(tmp_path / "w"), "--quiet"])
    assert rc == 0
    s = json.loads((tmp_path / "w.json").read_text())["methods"]["sam2 (random weights)"]["summary"]
    assert s["num_images"] == 1 and s["num_objects"] == 1
    assert 0.0 <= s["AR@1"] <= s["AR@10"] <= 1.0
    assert "AR@10 (%)" in (tmp_path / "w.md").read_text()


def test_fewshot_cli_with_a_fake_segmenter(tmp_path, monkeypatch, disc_fn):
    data = _dataset(tmp_path, disc_fn)

    class Copy:
        def __init__(self, model, image_size=640):
            assert image_size == 518
            self.ref = None

        def add_reference(self, image, mask=None):
            self.ref = mask

        def segment(self, target):
            return type("R", (), {"mask": self.ref})()

    monkeypatch.setattr(cli, "_load", lambda args, **kw: object())
    monkeypatch.setitem(vars(napari_granseg), "FewShotSegmenter", Copy)  # the real one may not exist yet
    rc = cli.main(["fewshot", "--model", "x.pth", "--reference", str(data), "--target", str(data),
                   "--image-size", "518", "--out", str(tmp_path / "f"), "--quiet"])
    assert rc == 0
    s = json.loads((tmp_path / "f.json").read_text())["methods"]["x"]["summary"]
    assert s["miou"] == 1.0 and s["fb_iou"] == 1.0 and s["per_class"]["5"]["episodes"] == 1
    assert "| **mean (x)** | 1 | **100.0** | **100.0** |" in (tmp_path / "f.md").read_text()


def test_cli_errors_are_messages(tmp_path, capsys):
    rc = cli.main(["interactive", "--kind", "unsamv2", "--config", "granseg_tiny.yaml",
                   "--dataset", str(tmp_path / "missing"), "--out", str(tmp_path / "x"), "--quiet"])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["interactive", "--dataset", "x", "--granularity", "2"])


def test_whole_cli_pools_granularities_through_the_generator(tmp_path, monkeypatch, disc_fn):
    data = _dataset(tmp_path, disc_fn)
    got = {}
    gt = disc_fn((41, 41), (20, 20), 8)

    def factory(model, granularities):
        got["g"] = granularities
        return lambda image: [(gt, 0.9), (~gt, 0.1)]

    monkeypatch.setattr(cli, "_load", lambda args, **kw: type("M", (), {"kind": "unsamv2"})())
    monkeypatch.setattr(cli, "_resolve", lambda spec: factory)
    rc = cli.main(["whole", "--model", "u.pt", "--kind", "unsamv2", "--dataset", str(data),
                   "--granularity", "0.2,0.8", "--max-dets", "1,10", "--out", str(tmp_path / "w"), "--quiet"])
    assert rc == 0 and got["g"] == [0.2, 0.8]
    s = json.loads((tmp_path / "w.json").read_text())["methods"]["u (g pooled)"]["summary"]
    assert s["AR@1"] == 1.0 and s["AR@10"] == 1.0 and s["mean_masks_per_image"] == 2.0

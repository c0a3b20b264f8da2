"""dask.distributed runs (2 worker processes) give the single-process labels; the granseg command line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_granseg import batch
from napari_granseg import io as gio
from napari_granseg.batch import Job, run_folder, run_stack
from napari_granseg.cli import main
from napari_granseg.synthetic import nested_cells_stack


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("dask.distributed")
    c, _ = batch.make_client(workers=2)
    yield c
    batch.close_client(c)


def test_local_cluster_gives_the_single_process_labels(client, image_folder, tmp_path, model_ref):
    folder, _ = image_folder
    job = Job(mode="prompts", prompts=str(folder / "prompts.csv"), model=model_ref)
    single = run_folder(folder, tmp_path / "single", job, progress=False)
    multi = run_folder(folder, tmp_path / "multi", job, progress=False, client=client)
    assert single.ok and multi.ok and len(multi.done) == 4 and multi.workers == 2
    for i in range(4):
        a = tifffile.imread(tmp_path / "single" / f"img_{i:03d}_labels.tif")
        b = tifffile.imread(tmp_path / "multi" / f"img_{i:03d}_labels.tif")
        assert a.max() >= 1
        np.testing.assert_array_equal(a, b)
    # the work ran in the worker processes, each holding exactly one model (loaded once, never shipped)
    import os

    pids = {r["pid"] for r in multi.done}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    models_per_worker = client.run(lambda: __import__("napari_granseg.model_store").model_store.cached_model_count())
    assert sorted(models_per_worker.values()) == [1, 1]
    # resume and bad files behave the same on the cluster
    (folder / "img_001b.tif").write_bytes(b"broken")
    with open(folder / "prompts.csv", "a") as f:
        f.write("img_001b.tif,3,3\n")
    again = run_folder(folder, tmp_path / "multi", job, progress=False, client=client)
    assert len(again.done) == 0 and len(again.skipped) == 4 and len(again.failed) == 1


def test_local_cluster_stack(client, tmp_path, model_ref, as_uint8):
    stack, scenes = nested_cells_stack(n_slices=4, size=96, seed=2)
    tifffile.imwrite(tmp_path / "st.tif", as_uint8(stack))
    rows = ["image,slice,row,col"] + [f"st.tif,{z},{s.centers[0][0]:.1f},{s.centers[0][1]:.1f}"
                                      for z, s in enumerate(scenes)]
    (tmp_path / "p.csv").write_text("\n".join(rows))
    job = Job(mode="prompts", prompts=str(tmp_path / "p.csv"), model=model_ref)
    run_stack(tmp_path / "st.tif", tmp_path / "a.zarr", job, progress=False)
    rep = run_stack(tmp_path / "st.tif", tmp_path / "b.zarr", job, progress=False, client=client)
    assert rep.ok and len(rep.done) == 4
    a, b = gio.open_stack(tmp_path / "a.zarr").compute(), gio.open_stack(tmp_path / "b.zarr").compute()
    assert a.max() == 1
    np.testing.assert_array_equal(a, b)


def test_loaded_model_cannot_go_to_workers(client, image_folder, tmp_path, model_ref, tiny_model):
    folder, _ = image_folder
    job = Job(mode="prompts", prompts=str(folder / "prompts.csv"), model=model_ref)
    with pytest.raises(ValueError, match="ModelRef"):
        run_folder(folder, tmp_path / "o", job, progress=False, client=client, model=tiny_model)


# ------------------------------------------------------------------------------------------------ CLI
def _model_args(model_ref):
    return ["--model", model_ref.name, "--kind", "unsamv2", "--config", "granseg_tiny.yaml", "--device", "cpu"]


def test_cli_sample_then_segment_with_prompts_and_resume(tmp_path, model_ref, capsys):
    sample = tmp_path / "s"
    assert main(["sample", "--out", str(sample), "-n", "2", "--size", "96"]) == 0
    assert sorted(p.name for p in sample.glob("*.tif")) == ["cells_000.tif", "cells_001.tif"]
    out = tmp_path / "o"
    args = ["segment", str(sample), "--prompts", str(sample / "prompts.csv"), "--out", str(out), "--no-progress"]
    assert main(args + _model_args(model_ref)) == 0
    assert "2 done" in capsys.readouterr().out
    labels = tifffile.imread(out / "cells_000_labels.tif")
    n_objects = sum(1 for line in (sample / "prompts.csv").read_text().splitlines() if line.startswith("cells_000"))
    assert set(np.unique(labels)) - {0} <= set(range(1, n_objects + 1)) and labels.max() >= 1
    report = json.loads((out / "granseg_report.json").read_text())
    assert len(report["images"]["done"]) == 2
    assert main(args + _model_args(model_ref)) == 0
    assert "0 done, 2 skipped" in capsys.readouterr().out


def test_cli_exit_codes_and_messages(tmp_path, model_ref, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["segment", str(tmp_path / "empty"), "--prompts", "x.csv", "--no-progress"]) == 2
    assert "prompt file x.csv not found" in capsys.readouterr().err
    (tmp_path / "p.csv").write_text("image,row,col\na.tif,1,oops\n")
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((32, 32), np.uint8))
    assert main(["segment", str(tmp_path / "a.tif"), "--prompts", str(tmp_path / "p.csv"), "--no-progress"]
                + _model_args(model_ref)) == 2
    assert "line 2: col 'oops' is not a number" in capsys.readouterr().err
    (tmp_path / "p.csv").write_text("image,row,col\na.tif,1,1\nbad.tif,2,2\n")
    assert main(["segment", str(tmp_path / "empty"), "--prompts", str(tmp_path / "p.csv")]) == 2
    assert "no images found" in capsys.readouterr().err
    (tmp_path / "bad.tif").write_bytes(b"nope")
    rc = main(["segment", str(tmp_path / "a.tif"), str(tmp_path / "bad.tif"), "--prompts", str(tmp_path / "p.csv"),
               "--out", str(tmp_path / "o"), "--no-progress"] + _model_args(model_ref))
    assert rc == 1 and "FAILED" in capsys.readouterr().out and (tmp_path / "o" / "a_labels.tif").is_file()
    with pytest.raises(SystemExit):
        main(["segment", str(tmp_path / "a.tif"), "--workers", "2", "--scheduler", "tcp://x:1"])


def test_cli_missing_model_is_one_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GRANSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GRANSEG_OFFLINE", "1")
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((32, 32), np.uint8))
    (tmp_path / "p.csv").write_text("image,row,col\na.tif,1,1\n")
    rc = main(["segment", str(tmp_path / "a.tif"), "--prompts", str(tmp_path / "p.csv"), "--model", "unsamv2-plus",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "unsamv2_plus_ckpt.pt" in err and "GRANSEG_CACHE_DIR" in err


def test_cli_stack_to_zarr_and_models(tmp_path, model_ref, capsys, as_uint8):
    stack, scenes = nested_cells_stack(n_slices=3, size=64, seed=4)
    tifffile.imwrite(tmp_path / "st.tif", as_uint8(stack))
    rows = ["image,slice,row,col"] + [f"st.tif,{z},{s.centers[0][0]:.1f},{s.centers[0][1]:.1f}"
                                      for z, s in enumerate(scenes)]
    (tmp_path / "p.csv").write_text("\n".join(rows))
    rc = main(["segment", str(tmp_path / "st.tif"), "--zarr", str(tmp_path / "st.zarr"), "--prompts",
               str(tmp_path / "p.csv"), "--no-progress"] + _model_args(model_ref))
    assert rc == 0 and gio.LabelsZarr.open(tmp_path / "st.zarr").done_indices() == [0, 1, 2]
    assert "3 done" in capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    demo = next(r for r in rows if r["name"] == "unsamv2-demo")
    assert demo["present"] is True and demo["path"].endswith("unsamv2_demo.pt")


def test_fewshot_mode(tmp_path, capsys):
    pytest.importorskip("napari_granseg.engine.fewshot")
    import torch

    import napari_granseg as gs
    from napari_granseg.checkpoints import save_checkpoint

    torch.manual_seed(0)
    fs_model = gs.load_model(None, kind="sansa", config="granseg_tiny.yaml", device="cpu")
    ckpt = tmp_path / "sansa.pt"
    save_checkpoint(fs_model.module.state_dict(), ckpt)
    sample = tmp_path / "s"
    main(["sample", "--out", str(sample), "-n", "2", "--size", "96"])
    fs = sample / "fewshot"
    rc = main(["fewshot", "--references", str(fs / "references"), "--reference-labels", str(fs / "reference_labels"),
               str(fs / "targets"), "--out", str(tmp_path / "o"), "--no-progress", "--model", str(ckpt), "--kind",
               "sansa", "--config", "granseg_tiny.yaml", "--base-checkpoint", str(ckpt), "--image-size", "128"])
    out = capsys.readouterr()
    assert rc == 0, out.err + out.out
    outputs = sorted((tmp_path / "o").glob("*_labels.tif"))
    assert [p.name for p in outputs] == ["target_000_labels.tif", "target_001_labels.tif"]
    # same result as ONE FewShotSegmenter used directly on the same references (class ids 1 = discs, 2 = triangles)
    from napari_granseg.engine.fewshot import FewShotSegmenter

    loaded = batch.worker_model(batch.ModelRef(str(ckpt), "sansa", "granseg_tiny.yaml", "cpu", str(ckpt)).resolved())
    pairs = batch.reference_pairs(fs / "references", fs / "reference_labels")
    ref_labels = [tifffile.imread(b) for _, b in pairs]
    assert sorted(set(np.unique(np.concatenate([r.ravel() for r in ref_labels]))) - {0}) == [1, 2]
    targets = [tifffile.imread(fs / "targets" / f"target_{i:03d}.tif") for i in range(2)]
    expected = FewShotSegmenter(loaded, image_size=128).segment_classes(
        targets, ref_labels, reference_images=[tifffile.imread(a) for a, _ in pairs])
    for out_path, exp in zip(outputs, expected):
        np.testing.assert_array_equal(tifffile.imread(out_path), exp)

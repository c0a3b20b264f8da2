"""Data-loss faults of batch runs: nothing the tool did not write is ever deleted or replaced, and a disk that
cannot take the results is found before any image is computed. Each test checks the error the user sees AND
that every file that was there before is byte-identical afterwards."""
from __future__ import annotations

import errno
import hashlib
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_granseg.batch import Job, ModelRef, OutputNotWritableError, is_granseg_labels, run_folder, run_stack
from napari_granseg.cli import main
from napari_granseg.io import ForeignStoreError, LabelsZarr
from napari_granseg.synthetic import nested_cells_scene


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> hash)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    import torch

    import napari_granseg as gs
    from napari_granseg.checkpoints import save_checkpoint

    torch.manual_seed(0)
    model = gs.load_model(None, kind="unsamv2", config="granseg_tiny.yaml", device="cpu")
    return save_checkpoint(model.module.state_dict(), tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def model_args(ckpt) -> list[str]:
    return ["--model", str(ckpt), "--kind", "unsamv2", "--config", "granseg_tiny.yaml", "--device", "cpu"]


def cells_folder(folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["image,row,col"]
    for i in range(n):
        scene = nested_cells_scene(size=64, n_cells=2, seed=i)
        tifffile.imwrite(folder / f"cells_{i:03d}.tif", scene.image)
        rows += [f"cells_{i:03d}.tif,{r:.1f},{c:.1f}" for r, c in scene.centers]
    (folder / "prompts.csv").write_text("\n".join(rows) + "\n")
    return folder


def small_stack(path: Path) -> Path:
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 255, (3, 32, 32), dtype=np.uint8))
    return path


# ------------------------------------------------------------------------------------------------ zarr --overwrite
@pytest.mark.parametrize("what", ["user folder holding the input", "zarr of another tool", "a file"])
def test_zarr_overwrite_never_deletes_what_granseg_did_not_write(tmp_path, capsys, what):
    data = tmp_path / "data"
    data.mkdir()
    stack = small_stack(data / "stack.tif")
    if what == "user folder holding the input":
        target = data
        (data / "notes.txt").write_text("two years of annotations")
        (data / "sub").mkdir()
        (data / "sub" / "more.csv").write_text("a,b\n1,2\n")
    elif what == "zarr of another tool":
        target = data / "theirs.zarr"
        zarr.open_group(str(target), mode="w").create_array("raw", shape=(4, 4), dtype="uint8", fill_value=7)
    else:
        target = data / "results.zarr"
        target.write_bytes(b"not a folder")
    before = snapshot(tmp_path)
    rc = main(["segment", str(stack), "--zarr", str(target), "--overwrite", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(target) in err and "not a labels store written by granseg" in err and "nothing deleted" in err
    assert err.count("\n") == 1 and "Traceback" not in err  # one clear line
    assert snapshot(tmp_path) == before


def test_our_store_is_replaced_only_with_overwrite_and_only_when_it_holds_nothing_else(tmp_path):
    stack = small_stack(tmp_path / "stack.tif")
    out = tmp_path / "out.zarr"
    # no prompts at all: every slice is skipped, so no model is needed to create the store
    job = Job(mode="prompts", prompts={}, model=ModelRef("none.pt", kind="unsamv2"))
    run_stack(stack, out, job, progress=False)
    assert zarr.open_group(str(out), mode="r").attrs["granseg"]["store"] == "labels"
    other = Job(mode="prompts", prompts=job.prompts, granularity=0.9, model=job.model)
    with pytest.raises(FileExistsError, match="overwrite"):
        run_stack(stack, out, other, progress=False)
    (out / "my_notes.txt").write_text("mine")  # a user file inside our store: the store is no longer ours alone
    before = snapshot(tmp_path)
    with pytest.raises(ForeignStoreError, match="my_notes.txt"):
        run_stack(stack, out, Job(**{**other.__dict__, "overwrite": True}), progress=False)
    assert snapshot(tmp_path) == before
    (out / "my_notes.txt").unlink()
    run_stack(stack, out, Job(**{**other.__dict__, "overwrite": True}), progress=False)  # ours: replaced
    assert zarr.open_group(str(out), mode="r").attrs["granseg"]["job"]["granularity"] == 0.9
    assert stack.is_file()


def test_an_empty_existing_folder_is_used_as_the_store(tmp_path):
    stack = small_stack(tmp_path / "stack.tif")
    (tmp_path / "made_by_hand.zarr").mkdir()
    store = LabelsZarr(tmp_path / "made_by_hand.zarr", (3, 32, 32), job={"a": 1})
    assert store.done_indices() == [] and stack.is_file()


# ------------------------------------------------------------------------------------------------ foreign label files
def test_hand_made_labels_file_is_refused_kept_and_the_others_done(tmp_path, tiny_ckpt, capsys):
    folder = cells_folder(tmp_path / "cells")
    mine = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    tifffile.imwrite(folder / "cells_000_labels.tif", mine)  # drawn by hand in Fiji
    before = snapshot(folder)
    args = ["segment", str(folder), "--prompts", str(folder / "prompts.csv"), "--no-progress"] + model_args(tiny_ckpt)
    rc = main(args)
    out = capsys.readouterr().out
    assert rc == 1
    assert "1 done" in out and "1 refused" in out and "REFUSED" in out and "cells_000_labels.tif" in out
    assert "--replace-foreign" in out
    after = snapshot(folder)
    assert {k: after[k] for k in before} == before  # every pre-existing file unchanged
    assert set(after) - set(before) == {"cells_001_labels.tif"}
    assert is_granseg_labels(folder / "cells_001_labels.tif")
    # --overwrite recomputes our own outputs, never a foreign file
    assert main(args + ["--overwrite"]) == 1
    assert snapshot(folder)["cells_000_labels.tif"] == before["cells_000_labels.tif"]
    capsys.readouterr()
    # naming the file allows replacing it
    assert main(args + ["--replace-foreign", "cells_000_labels.tif"]) == 0
    assert is_granseg_labels(folder / "cells_000_labels.tif")
    assert not np.array_equal(tifffile.imread(folder / "cells_000_labels.tif"), mine)


def test_refused_outputs_are_not_even_computed(tmp_path):
    folder = cells_folder(tmp_path / "cells", n=1)
    tifffile.imwrite(folder / "cells_000_labels.tif", np.ones((64, 64), np.uint8))
    before = snapshot(folder)
    job = Job(mode="prompts", prompts=str(folder / "prompts.csv"), model=ModelRef("missing.pt", kind="unsamv2"))
    report = run_folder(folder, None, job, progress=False)  # no model load: nothing left to compute
    assert not report.ok and len(report.refused) == 1 and not report.failed and not report.done
    assert snapshot(folder) == before


def test_report_is_never_written_over_a_user_file(tmp_path, tiny_ckpt, capsys):
    folder = cells_folder(tmp_path / "cells", n=1)
    (tmp_path / "results.csv").write_text("my,table\n")
    before = snapshot(tmp_path)
    rc = main(["segment", str(folder), "--prompts", str(folder / "prompts.csv"), "--out", str(tmp_path / "o"),
               "--report", str(tmp_path / "results.csv"), "--no-progress"] + model_args(tiny_ckpt))
    assert rc == 1 and "--report NEWFILE" in capsys.readouterr().err
    assert {k: v for k, v in snapshot(tmp_path).items() if k in before} == before


def test_sample_is_not_written_over_existing_files(tmp_path, capsys):
    (tmp_path / "prompts.csv").write_text("mine\n")
    before = snapshot(tmp_path)
    assert main(["sample", "--out", str(tmp_path), "-n", "1", "--size", "32"]) == 2
    assert "choose a new or empty folder" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------------ unwritable / full
def _read_only(monkeypatch):
    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


def test_read_only_output_folder_is_found_before_any_image_is_computed(tmp_path, monkeypatch):
    folder = cells_folder(tmp_path / "cells")
    before = snapshot(folder)
    _read_only(monkeypatch)
    job = Job(mode="prompts", prompts=str(folder / "prompts.csv"), model=ModelRef("missing.pt", kind="unsamv2"))
    with pytest.raises(OutputNotWritableError, match="read-only.*--out DIR") as info:
        run_folder(folder, tmp_path / "out", job, progress=False)  # a model load would fail with another error
    assert info.value.errno == errno.EROFS
    assert snapshot(folder) == before


def test_read_only_output_is_one_line_on_the_command_line(tmp_path, monkeypatch, capsys):
    folder = cells_folder(tmp_path / "cells")
    _read_only(monkeypatch)
    rc = main(["segment", str(folder), "--prompts", str(folder / "prompts.csv"), "--out", str(tmp_path / "o"),
               "--no-progress", "--model", "missing.pt", "--kind", "unsamv2"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "the file system is read-only" in err and "Traceback" not in err


def test_output_path_under_a_file_is_one_clear_error(tmp_path, capsys):
    folder = cells_folder(tmp_path / "cells")
    (tmp_path / "afile").write_text("x")
    rc = main(["segment", str(folder), "--prompts", str(folder / "prompts.csv"), "--out",
               str(tmp_path / "afile" / "out"), "--no-progress", "--model", "missing.pt", "--kind", "unsamv2"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("granseg: error: cannot write to") and err.count("\n") == 1


def test_disk_full_mid_run_stops_keeps_finished_outputs(tmp_path, tiny_ckpt, monkeypatch, capsys):
    folder = cells_folder(tmp_path / "cells", n=3)
    before = snapshot(folder)
    real, writes = tifffile.imwrite, []

    def fills_up(path, data, **kw):
        writes.append(path)
        if len(writes) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data, **kw)

    monkeypatch.setattr(tifffile, "imwrite", fills_up)
    out = tmp_path / "o"
    rc = main(["segment", str(folder), "--prompts", str(folder / "prompts.csv"), "--out", str(out),
               "--no-progress"] + model_args(tiny_ckpt))
    captured = capsys.readouterr()
    assert rc == 2 and captured.err.count("\n") == 1 and "the disk is full; free some space" in captured.err
    assert len(writes) == 2  # stopped at the first full write: the third image was never computed
    assert sorted(p.name for p in out.iterdir()) == ["cells_000_labels.tif"]  # finished output kept, no temp file
    assert is_granseg_labels(out / "cells_000_labels.tif")
    assert "the 1 output(s) finished so far are kept" in captured.err
    assert snapshot(folder) == before

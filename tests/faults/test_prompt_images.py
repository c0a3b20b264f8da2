"""A prompt file row naming an image that is not among the inputs is refused before any work: the message
names the prompt file, the line and the image, the run exits 2 and writes nothing (as the few-shot
references). A typo in an image name must not finish "successfully" without the objects the row asks for."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_granseg.batch import Job, PromptFileError, run_folder, run_stack
from napari_granseg.cli import main


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        tifffile.imwrite(folder / f"cells_00{i}.tif", np.full((32, 32), 40 * i, np.uint8))
    (tmp_path / "p.csv").write_text("# clicks\nimage,row,col\ncells_000.tif,5,5\ncells_001.tif,6,6\n"
                                    "cells_0001.tif,7,7\ncells_000.tif,8,8\nother/cells_009.tif,1,1\n")
    return tmp_path


def test_cli_names_the_prompt_file_line_and_image_and_writes_nothing(images, capsys):
    before = snapshot(images)
    rc = main(["segment", str(images / "images"), "--prompts", str(images / "p.csv"), "--out",
               str(images / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"{images / 'p.csv'} line 5: image 'cells_0001.tif' is not among the 2 input image(s)" in err
    assert f"{images / 'p.csv'} line 7: image 'other/cells_009.tif'" in err
    assert "cells_000.tif, cells_001.tif" in err and "Traceback" not in err
    assert snapshot(images) == before and not (images / "out").exists()


def test_cli_a_stack_and_a_folder_share_one_prompt_file(images, capsys, monkeypatch):
    """Rows for a stack and rows for a folder's images in one file: every row has its input, nothing refused
    (each run gets its own rows); a row for neither is refused before both."""
    tifffile.imwrite(images / "stack.tif", np.zeros((3, 32, 32), np.uint8))
    (images / "q.csv").write_text("image,row,col,slice\ncells_000.tif,5,5,\nstack.tif,3,3,1\nnope.tif,1,1,\n")
    before = snapshot(images)
    rc = main(["segment", str(images / "images"), str(images / "stack.tif"), "--stack", "--prompts",
               str(images / "q.csv"), "--out", str(images / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "q.csv line 4: image 'nope.tif' is not among the 3 input image(s)" in err, err
    assert snapshot(images) == before
    seen = []
    import napari_granseg.batch as batch

    def run_folder_spy(inputs, out, job, **kw):
        seen.append(("folder", {Path(k).name: len(v) for k, v in batch.read_prompts(job.prompts).items()}))
        return batch.BatchReport()

    def run_stack_spy(path, out, job, **kw):
        seen.append(("stack", {Path(k).name: len(v) for k, v in batch.read_prompts(job.prompts).items()}))
        return batch.BatchReport()

    monkeypatch.setattr(batch, "run_folder", run_folder_spy)
    monkeypatch.setattr(batch, "run_stack", run_stack_spy)
    (images / "q.csv").write_text("image,row,col,slice\ncells_000.tif,5,5,\nstack.tif,3,3,1\n")
    assert main(["segment", str(images / "images"), str(images / "stack.tif"), "--stack", "--prompts",
                 str(images / "q.csv"), "--out", str(images / "out"), "--no-progress"]) == 0
    assert seen == [("folder", {"cells_000.tif": 1}), ("stack", {"stack.tif": 1})]


def test_the_batch_api_refuses_the_same_rows(images):
    with pytest.raises(PromptFileError, match=r"p\.csv line 5: image 'cells_0001\.tif' is not among"):
        run_folder(images / "images", images / "out", Job(mode="prompts", prompts=str(images / "p.csv")),
                   progress=False)
    assert not (images / "out").exists()
    tifffile.imwrite(images / "stack.tif", np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(PromptFileError, match=r"line 3: image 'cells_000\.tif' is not among the 1 input"):
        run_stack(images / "stack.tif", images / "out.zarr", Job(mode="prompts", prompts=str(images / "p.csv")),
                  progress=False)
    assert not (images / "out.zarr").exists()

"""Multi-GPU training runs the UnSAMv2 step inside DistributedDataParallel under ``torchrun``.

CI has no GPU, so two CPU processes with the gloo backend stand in for two GPUs: the same code path except
the backend (nccl on CUDA). The ranks see different images (DistributedSampler), so identical weights after
training show that the gradients were all-reduced.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import napari_granseg as gs

WORKER = Path(__file__).with_name("ddp_worker.py")


def _torchrun(out: Path, *extra: str) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
           str(out), "3", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    return out, _torchrun(out)


def test_ranks_see_different_images_and_end_with_the_same_weights(ddp_run):
    _, (r0, r1) = ddp_run
    assert (r0["world_size"], r1["world_size"]) == (2, 2)
    assert r0["steps"] == r1["steps"] == 3
    assert not set(r0["images"]) & set(r1["images"]), "DistributedSampler should give each rank its own images"
    assert r0["initial"] == r1["initial"], "same seed -> same initial weights"
    assert r0["final"] != r0["initial"], "training should change the weights"
    assert r0["final"] == r1["final"], "gradients were not all-reduced: the ranks' weights differ"
    assert r0["video"] == r1["video"] and set(r0["video"]) == {0.0, 1.0}, "both kinds of step, in lockstep"


def test_only_rank0_writes_and_the_checkpoint_loads(ddp_run):
    out, _ = ddp_run
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3], "one log line per step, from rank 0 only"
    loaded = gs.load_model(out / "unsamv2_trained.pt", kind="unsamv2", config="granseg_tiny.yaml", device="cpu")
    assert loaded.kind == "unsamv2"


def test_a_batch_without_masks_on_one_rank_is_skipped_by_both(tmp_path):
    r0, r1 = _torchrun(tmp_path, "--empty-batch-on-rank1")
    assert r0["steps"] == r1["steps"] == 3
    assert len(r0["images"]) == len(r1["images"]) == 4, "the ranks fell out of step"
    assert r0["final"] == r1["final"]

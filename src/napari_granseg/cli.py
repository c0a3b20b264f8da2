"""``granseg``: batch segmentation from the command line (see docs/batch.md).

    granseg sample --out /tmp/s                                  # synthetic sample images + prompt file
    granseg segment /tmp/s --out /tmp/s_out --granularity 0.5    # whole image, every image of the folder
    granseg segment /tmp/s --prompts /tmp/s/prompts.csv --out /tmp/s_out
    granseg segment stack.tif --zarr stack_labels.zarr --workers 2
    granseg fewshot --references refs/ --reference-labels refs_labels/ targets/ --out out/
    granseg models

Exit status: 0 all items done or skipped, 1 some items failed or were refused (listed, and in
<out>/granseg_report.json), 2 could not run (no inputs, unreadable prompt file, model not available, output
folder not writable or full, output path holding files granseg did not write), 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main"]


def _int_in(low: int, high: int):
    """An argparse type: a whole number in [low, high], refused at parsing with the flag's name."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value
    return parse


def _device_name(text: str) -> str:
    """An argparse type: auto, cpu, cuda, cuda:N or mps (checked without importing torch)."""
    name = text.strip().lower()
    head, _, index = name.partition(":")
    if name == "auto" or (head in ("cpu", "cuda", "mps") and (not index or (head == "cuda" and index.isdigit()))):
        return name
    raise argparse.ArgumentTypeError(f"{text!r} is not a device: give auto, cpu, cuda, cuda:N or mps")


def _add_model_args(ap: argparse.ArgumentParser, default_hint: str) -> None:
    g = ap.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help=f"zoo name (see `granseg models`) or checkpoint path; default: {default_hint}")
    g.add_argument("--kind", default=None, choices=("unsamv2", "sam2", "sansa"), help="model kind (needed for a path)")
    g.add_argument("--config", default=None, help="SAM 2 config of a checkpoint path (e.g. configs/sam2.1/sam2.1_hiera_s.yaml)")
    g.add_argument("--base-checkpoint", default=None, help="SANSA: the SAM 2 base checkpoint")
    g.add_argument("--device", default="auto", type=_device_name, help="auto | cpu | cuda | cuda:1 | mps")
    g.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="fp32: exactly the official models' computation; auto (default): bfloat16 where it is "
                        "measured faster (CUDA, CPUs with native bf16); bf16: always bfloat16")


def _add_run_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("run")
    g.add_argument("--out", default=None, help="output folder (default: next to each input)")
    g.add_argument("--zarr", default=None, help="output zarr store for a stack input (one TIFF/zarr stack)")
    g.add_argument("--stack", action="store_true",
                   help="treat each TIFF input as a stack: write <stem>_labels.zarr (in --out or next to it)")
    g.add_argument("--recursive", action="store_true", help="also take images in sub-folders")
    g.add_argument("--overwrite", action="store_true",
                   help="recompute outputs granseg wrote before (files granseg did not write are never replaced)")
    g.add_argument("--replace-foreign", action="append", default=[], metavar="PATTERN",
                   help="allow replacing these existing files although granseg did not write them (a file name, "
                        "path or glob such as 'cells_*_labels.tif'; repeatable). Default: such files are kept "
                        "and their image is reported as refused")
    par = g.add_mutually_exclusive_group()
    par.add_argument("--workers", type=int, default=1,
                     help="N > 1: run on a local dask cluster of N processes (one model each)")
    par.add_argument("--scheduler", default=None, help="dask scheduler address (tcp://host:8786) of a real cluster")
    g.add_argument("--threads", type=int, default=None, help="torch threads per worker (default cores/workers)")
    g.add_argument("--channels", default=None, metavar="K | A,B[,C]",
                   help="multi-channel images: the channel the model sees (0) or a composite of up to three "
                        "(0,2: first into red, second into green); also for few-shot references and targets")
    g.add_argument("--channel-axis", type=int, default=None, choices=(0, -1),
                   help="where the channels are: 0 for (C, H, W), -1 for (H, W, C) (default: from the shape)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--report", default=None, help="where to write the JSON report (default <out>/granseg_report.json)")


def _parser() -> argparse.ArgumentParser:
    from .engine.tiling import SCALES

    ap = argparse.ArgumentParser(prog="granseg", description="Batch segmentation with napari-granseg (UnSAMv2 "
                                 "granularity, SANSA few-shot) on folders, stacks and clusters.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment images/stacks at a granularity (whole image) or from a prompt file")
    seg.add_argument("inputs", nargs="+", help="image files, folders, TIFF stacks or .zarr stores")
    seg.add_argument("--granularity", "-g", type=_granularity_arg, default=0.5,
                     help="0.1 (small parts) .. 1 (whole objects); default 0.5")
    seg.add_argument("--prompts", default=None, help="CSV/JSON prompt file: image,row,col[,granularity,object,label,slice]")
    seg.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                     help="whole-image engine setting, e.g. --set points_per_side=16 (repeatable)")
    seg.add_argument("--scale", default="auto", choices=SCALES,
                     help="images larger than the model's input: tile (own pixel scale, small objects), "
                          "downscale (the whole image in one input, large objects), auto (default: tile when "
                          "the model would shrink the image more than 2x); see docs/large_images.md")
    seg.add_argument("--tile", type=int, default=None, metavar="N",
                     help="tile size in pixels with --scale tile/auto (default: the model's input size)")
    _add_model_args(seg, "best cached UnSAMv2, else the demo model")
    _add_run_args(seg)

    few = sub.add_parser("fewshot", help="segment targets like annotated reference images (SANSA)")
    few.add_argument("targets", nargs="+", help="target image files/folders/stacks")
    few.add_argument("--references", required=True, help="folder of reference images")
    few.add_argument("--reference-labels", required=True,
                     help="folder of label images, named like the references (or <stem>_labels.tif)")
    few.add_argument("--image-size", type=int, default=640, help="square pre-resize (640 or 518)")
    _add_model_args(few, "best cached SANSA, else the demo model")
    _add_run_args(few)

    from .cli_finetune import add_finetune_parser

    add_finetune_parser(sub)

    mod = sub.add_parser("models", help="list the model zoo, cache paths and what is present")
    mod.add_argument("--json", action="store_true", help="machine-readable output")

    smp = sub.add_parser("sample", help="write synthetic sample images (and prompt/few-shot files) to try the CLI")
    smp.add_argument("--out", required=True, help="folder to write to")
    smp.add_argument("-n", type=_int_in(1, 1000), default=4, help="number of images (1..1000)")
    smp.add_argument("--size", type=_int_in(16, 4096), default=256, help="image size in pixels (16..4096)")
    return ap


def _granularity_arg(text: str) -> float:
    """``--granularity``: one number in [0.1, 1]; several values are refused by name (one label image per
    input; the Python API's ``gs.segment_everything(image, granularity=[...])`` gives a hierarchy)."""
    parts = [p for p in text.replace(";", ",").split(",") if p.strip()]
    if len(parts) > 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} holds {len(parts)} values: a run writes one label image per input at one granularity; "
            f"run once per value (each with its own --out), or use gs.segment_everything(image, "
            f"granularity=[...]) in Python for the parts-to-wholes hierarchy")
    from .engine.prompts import one_granularity

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number: give one in [0.1, 1]") from None
    try:  # the engines' rule (gs.segment, the batch jobs and the widgets check the same)
        return one_granularity(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _parse_settings(pairs: Sequence[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"granseg: --set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _parse_channels(text: str | None) -> int | tuple[int, ...] | None:
    from .engine.channels import parse_channels

    return parse_channels(text, "--channels")


def _check_channels(images: Sequence[str], recursive: bool) -> None:
    """Refuse, in one line before any work, multi-channel images (H, W, 2|5) without --channels."""
    from .batch import expand_inputs
    from .batch.worker import channels_needed_message
    from .engine.source import needs_channel_choice
    from .io import stack_shape

    for f in expand_inputs(images, recursive=recursive):
        try:
            shape = stack_shape(f) if f.suffix.lower() in (".tif", ".tiff") else None
        except Exception:  # unreadable files are reported per item by the run
            continue
        if shape is not None and needs_channel_choice(shape):
            raise ValueError(channels_needed_message(f, shape))


def _fail(msg: str) -> int:
    print(f"granseg: error: {msg}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``granseg`` command; returns the exit status (see module docstring)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="granseg: %(message)s")
    if args.command == "models":
        return _models(args.json)
    if args.command == "sample":
        return _sample(Path(args.out), args.n, args.size)
    if args.command == "finetune":
        from .cli_finetune import run_finetune

        return run_finetune(args)
    return _run(args)


def _run(args) -> int:
    per_input: dict = {}  # prompts mode: each input's prompts, matched before any work
    from .batch import (Job, ModelRef, OutputNotWritableError, PromptFileError, expand_inputs, read_prompts,
                        run_folder, run_stack)
    from .batch.prompts import check_prompt_images
    from .zoo import ModelDownloadError

    try:
        model = ModelRef(args.model, args.kind, args.config, args.device, args.base_checkpoint)
        channels = dict(channels=_parse_channels(args.channels), channel_axis=args.channel_axis)
        if args.command == "fewshot":
            job = Job(mode="fewshot", model=model, references=args.references,
                      reference_labels=args.reference_labels, image_size=args.image_size,
                      precision=args.precision, overwrite=args.overwrite,
                      replace_foreign=tuple(args.replace_foreign), torch_threads=args.threads, **channels)
            inputs = args.targets
        else:
            job = Job(mode="prompts" if args.prompts else "whole", granularity=args.granularity, model=model,
                      settings=_parse_settings(args.settings), prompts=args.prompts, precision=args.precision,
                      overwrite=args.overwrite, replace_foreign=tuple(args.replace_foreign),
                      torch_threads=args.threads, scale=args.scale, tile=args.tile, **channels)
            inputs = args.inputs
        if args.scheduler:  # a malformed or unsafe address fails now, before any image is read
            from .remote.client.addresses import check_address

            check_address(args.scheduler)
        if job.mode == "prompts":
            read_prompts(job.prompts)  # a bad prompt file fails now, with its line number
        if job.mode == "fewshot":
            _check_references(job)
        if job.mode == "whole":
            _check_whole_engine()
        stacks, images = _split_inputs(inputs, args)
        if args.zarr and len(stacks) != 1:
            return _fail(f"--zarr names one output store, but {len(stacks)} stack inputs were given "
                         f"(use --stack --out DIR for several)")
        files = expand_inputs(images, recursive=args.recursive) if images else []  # missing inputs fail now
        if images and not files:
            from .batch.inputs import no_images_error

            raise no_images_error(images, args.recursive)
        if images and not job.has_channel_choice:
            _check_channels(images, args.recursive)
        if job.mode == "prompts":  # a row naming an image that is not an input fails now, with its line
            per_input = check_prompt_images(read_prompts(job.prompts), files + stacks, job.prompts_base)
    except PromptFileError as err:
        return _fail(f"{err} (prompt file format: docs/batch.md, 'Prompt files')")
    except (ValueError, FileNotFoundError) as err:
        return _fail(str(err))

    run_kw = dict(progress=not args.no_progress, workers=args.workers if args.workers > 1 else None,
                  scheduler=args.scheduler)
    reports = []
    client = None
    try:
        if (args.workers > 1 or args.scheduler) and len(stacks) + bool(images) > 1:
            from .batch import make_client

            client, _ = make_client(args.workers, args.scheduler)
            run_kw.update(client=client, workers=None, scheduler=None)
        if images:
            rep = run_folder(images, args.out, _own_prompts(job, per_input, files, others=stacks),
                             recursive=args.recursive, **run_kw)
            reports.append(("images", rep))
        for stack in stacks:
            out = Path(args.zarr) if args.zarr else _stack_output(stack, args.out)
            rep = run_stack(stack, out, _own_prompts(job, per_input, [stack],
                                                        others=[s for s in stacks if s != stack] + files), **run_kw)
            reports.append((f"{stack} -> {out}", rep))
    except OutputNotWritableError as err:
        _print_reports(reports)
        return _fail(err.strerror or str(err))
    except (FileNotFoundError, PromptFileError, ModelDownloadError, FileExistsError, ValueError, OSError,
            ImportError, RuntimeError) as err:
        _print_reports(reports)
        return _fail(str(err))
    except KeyboardInterrupt:
        print("granseg: interrupted; finished outputs are kept, rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        if client is not None:
            from .batch import close_client

            close_client(client)

    failed = _print_reports(reports)
    report_path = Path(args.report) if args.report else (Path(args.out) / "granseg_report.json" if args.out else None)
    if report_path is not None:
        from .batch.outputs import write_report

        try:
            write_report(report_path, {name: rep.to_dict() for name, rep in reports})
        except OSError as err:
            print(f"granseg: report not written: {err}", file=sys.stderr)
            return 1
        print(f"report: {report_path}")
    return 1 if failed else 0


def _print_reports(reports) -> int:
    """Print each run's summary; return how many items failed or were refused."""
    bad = 0
    for name, rep in reports:
        print(f"{name}: {rep.summary()}" if len(reports) > 1 else rep.summary())
        bad += len(rep.failed) + len(rep.refused)
    return bad


def _check_references(job) -> None:
    """Every few-shot reference pair read and checked before any target is processed (ValueError naming the
    reference image and label image at fault: the run stops with nothing written)."""
    from .batch.worker import fewshot_references

    fewshot_references(job)


def _check_whole_engine() -> None:
    try:
        import napari_granseg.engine.automatic  # noqa: F401
    except ImportError as err:
        raise ValueError("whole-image segmentation (segment everything) is not available in this installation "
                         f"({err}); use --prompts FILE") from err


def _own_prompts(job, per_input: dict, mine: Sequence[Path], others: Sequence[Path]):
    """``job`` for one run of several (images, then each stack): only the prompts of ``mine``, so no run
    refuses the rows meant for another (all rows were matched to an input before the first run)."""
    if job.mode != "prompts" or not others:
        return job
    import dataclasses

    return dataclasses.replace(job, prompts={str(Path(p).resolve()): per_input[p] for p in mine if p in per_input})


def _split_inputs(inputs: Sequence[str], args) -> tuple[list[Path], list[str]]:
    """Stacks (.zarr stores; TIFFs with --stack or --zarr) vs. image files/folders."""
    stacks, images = [], []
    for raw in inputs:
        p = Path(raw).expanduser()
        if p.suffix.lower() == ".zarr" or (p.is_file() and p.suffix.lower() in (".tif", ".tiff")
                                           and (args.stack or args.zarr)):
            if not p.exists():
                raise FileNotFoundError(f"input {p} does not exist")
            stacks.append(p)
        else:
            images.append(raw)
    return stacks, images


def _stack_output(stack: Path, out: str | None) -> Path:
    name = f"{stack.name[:-5] if stack.suffix.lower() == '.zarr' else stack.stem}_labels.zarr"
    return (Path(out) / name) if out else stack.with_name(name)


def _models(as_json: bool) -> int:
    from .zoo import ZOO, cache_dir, checkpoint_path, model_status

    rows = []
    for spec in ZOO.values():
        status = model_status(spec.name)  # a web page or a changed file is never called "present"
        rows.append({"name": spec.name, "kind": spec.kind, "present": status == "present", "status": status,
                     "path": str(checkpoint_path(spec)), "size_mb": spec.size_mb, "description": spec.description})
    if as_json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"cache: {cache_dir()} (set GRANSEG_CACHE_DIR to change)")
    for r in rows:
        mark = r["status"] if r["present"] or r["status"] == "missing" else "PROBLEM"
        print(f"{r['name']:24s} {r['kind']:8s} {mark:8s} {r['path']}\n    {r['description']}")
        if mark == "PROBLEM":
            print(f"    {r['status']}")
    return 0


def _sample(out: Path, n: int, size: int) -> int:
    """Synthetic nested-cell images + prompts.csv (nucleolus centres), and a few-shot set (discs/triangles)."""
    import numpy as np

    from .io import write_labels_tiff
    from .synthetic import nested_cells_scene, shapes_scene

    import tifffile

    from .io import atomic_path, atomic_write_bytes

    planned = ([out / f"cells_{i:03d}.tif" for i in range(n)] + [out / "prompts.csv"]
               + [out / "fewshot" / sub for sub in ("references", "reference_labels", "targets")])
    existing = [str(p) for p in planned if p.exists()]
    if existing:
        return _fail(f"{out} already holds {existing[:3]}{' ...' if len(existing) > 3 else ''}; the sample is not "
                     f"written over existing files: choose a new or empty folder with --out")
    out.mkdir(parents=True, exist_ok=True)
    lines = ["image,row,col,granularity,object"]
    for i in range(n):
        scene = nested_cells_scene(size=size, n_cells=3, seed=100 + i)
        name = f"cells_{i:03d}.tif"
        with atomic_path(out / name) as tmp:
            tifffile.imwrite(tmp, scene.image)
        for k, (r, c) in enumerate(scene.centers, start=1):
            lines.append(f"{name},{r:.1f},{c:.1f},{0.3 if k % 2 else 0.8},{k}")
    atomic_write_bytes(out / "prompts.csv", ("\n".join(lines) + "\n").encode())
    rng = np.random.default_rng(5)
    for sub in ("references", "reference_labels", "targets"):
        (out / "fewshot" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(2 + max(1, n)):
        img, lab = shapes_scene(size=size, n_objects=5, rng=rng)
        if i < 2:
            with atomic_path(out / "fewshot" / "references" / f"ref_{i}.tif") as tmp:
                tifffile.imwrite(tmp, img)
            write_labels_tiff(out / "fewshot" / "reference_labels" / f"ref_{i}.tif", lab)
        else:
            with atomic_path(out / "fewshot" / "targets" / f"target_{i - 2:03d}.tif") as tmp:
                tifffile.imwrite(tmp, img)
    print(f"wrote {n} images and prompts.csv to {out}, and a few-shot set to {out / 'fewshot'}. Try:\n"
          f"  granseg segment {out} --out {out}_labels --granularity 0.5\n"
          f"  granseg segment {out} --prompts {out / 'prompts.csv'} --out {out}_labels\n"
          f"  granseg fewshot --references {out / 'fewshot/references'} --reference-labels "
          f"{out / 'fewshot/reference_labels'} {out / 'fewshot/targets'} --out {out}_fewshot")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

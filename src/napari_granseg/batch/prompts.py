"""Prompt files (CSV or JSON) for batch runs, matched to the input images, and turned into clicks.

The file format is documented in :func:`read_prompts` and docs/batch.md. Errors name the file and the line,
because a prompt file is typed by hand and the line number is what the user needs to fix it.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..engine.prompts import one_granularity

__all__ = ["Prompt", "PromptFileError", "PromptTable", "read_prompts", "match_prompts", "check_prompt_images",
           "objects_as_clicks"]


@dataclass(frozen=True)
class Prompt:
    """One click: (row, col) in pixels (napari order). label 1 = positive, 0 = negative.

    granularity None: the job's. object_id None: each positive point is its own object; positive points
    sharing an id form one object (the union of their masks). Negative points cut every object of their
    image, as in ``gs.segment``. ``slice``: the stack index (stacks only).
    """

    row: float
    col: float
    granularity: float | None = None
    object_id: int | None = None
    label: int = 1
    slice: int | None = None


class PromptFileError(ValueError):
    """A prompt file that cannot be used; the message names the file and line."""


class PromptTable(dict):
    """``{image name: [Prompt, ...]}`` as read from a prompt file; ``where[name]``: the file and line (or
    record) where the name first appears, so a later problem with that image names the line to fix."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.where: dict[str, str] = {}

    def add(self, image: str, prompt: Prompt, where: str) -> None:
        self.setdefault(image, []).append(prompt)
        self.where.setdefault(image, where)


_ALIASES = {"image": "image", "file": "image", "filename": "image", "path": "image",
            "row": "row", "y": "row", "col": "col", "column": "col", "x": "col",
            "granularity": "granularity", "g": "granularity",
            "object": "object_id", "object_id": "object_id", "id": "object_id",
            "label": "label", "positive": "label", "slice": "slice", "z": "slice", "t": "slice", "index": "slice"}


def _prompt_from_record(rec: Mapping[str, Any], where: str, image: str | None = None) -> tuple[str, Prompt]:
    norm = {}
    for k, v in rec.items():
        key = _ALIASES.get(str(k).strip().lower())
        if key is not None and v not in (None, ""):
            norm[key] = v.strip() if isinstance(v, str) else v
    image = image if image is not None else norm.get("image")
    if image in (None, ""):
        raise PromptFileError(f"{where}: no image name (column 'image')")
    for need in ("row", "col"):
        if need not in norm:
            raise PromptFileError(f"{where}: missing {need!r} (columns: image,row,col[,granularity,object,label,slice])")

    def num(key, cast):
        if key not in norm:
            return None
        try:
            value = float(norm[key])
        except (TypeError, ValueError):
            return _bad(key, norm[key])
        if not np.isfinite(value):
            raise PromptFileError(f"{where}: {key} {norm[key]!r} is not a finite number: give the click in pixels")
        return cast(value) if cast is float or value == int(value) else _bad(key, norm[key])

    def _bad(key, value):
        raise PromptFileError(f"{where}: {key} {value!r} is not a {'number' if key in ('row', 'col', 'granularity') else 'whole number'}")

    g = num("granularity", float)
    if g is not None:
        try:  # the engines' rule (gs.segment checks the same)
            g = one_granularity(g)
        except ValueError as err:
            raise PromptFileError(f"{where}: {err}") from None
    label = num("label", int)
    if label not in (None, 0, 1):
        raise PromptFileError(f"{where}: label {label} must be 1 (positive) or 0 (negative)")
    object_id = num("object_id", int)
    if object_id is not None and object_id < 1:
        raise PromptFileError(f"{where}: object {object_id} must be 1 or more (0 is the background of a label "
                              f"image); leave the column empty to number objects in file order")
    return str(image), Prompt(row=num("row", float), col=num("col", float), granularity=g,
                              object_id=object_id, label=1 if label is None else label,
                              slice=num("slice", int))


def read_prompts(source: str | os.PathLike | Mapping[str, Sequence]) -> PromptTable:
    """Read a prompt file into ``{image name: [Prompt, ...]}`` (a :class:`PromptTable`: it also knows each
    name's line).

    CSV (comma separated, header line, ``#`` comments): ``image,row,col[,granularity][,object][,label][,slice]``::

        image,row,col,granularity,object
        cells_000.tif,120,88,0.3,1
        cells_000.tif,40,200,0.8,2

    JSON: a list of such records (``[{"image": "a.tif", "row": 1, "col": 2, "granularity": 0.3}, ...]``) or
    ``{"a.tif": [{"row": 1, "col": 2}, [row, col], ...], ...}``. A Python mapping of the same shape is taken
    as is, so ``{"a.tif": [(120, 88), (40, 200)]}`` works from scripts.

    image: a file name, a path relative to the prompt file, or an absolute path. row/col: pixels (float ok).
    granularity: per point, else the job's. object: points with the same id make one object (its label
    value); without ids every positive point is a new object, numbered in file order. label: 1 positive
    (default), 0 negative (for every object of the image). slice: the stack index when the image is a stack.
    Coordinates must be finite numbers (``nan``/``inf`` are errors naming the line).
    """
    if isinstance(source, Mapping):
        return _prompts_from_mapping(source, "prompts")
    path = Path(source)
    if not path.is_file():
        raise PromptFileError(f"prompt file {path} not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise PromptFileError(f"prompt file {path} cannot be read as text ({err})") from err
    out = PromptTable()
    if path.suffix.lower() == ".json" or text.lstrip()[:1] in ("[", "{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise PromptFileError(f"{path} line {err.lineno}: invalid JSON ({err.msg})") from err
        if isinstance(data, Mapping):
            return _prompts_from_mapping(data, str(path))
        if not isinstance(data, list):
            raise PromptFileError(f"{path}: expected a JSON list of records or an object keyed by image")
        for i, rec in enumerate(data):
            if not isinstance(rec, Mapping):
                raise PromptFileError(f"{path} record {i}: expected an object with image,row,col")
            image, prompt = _prompt_from_record(rec, f"{path} record {i}")
            out.add(image, prompt, f"{path} record {i}")
        return out
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise PromptFileError(f"prompt file {path} is empty")
    header_no, header = lines[0]
    fields = [f.strip().lower() for f in next(csv.reader([header]))]
    if "row" not in {_ALIASES.get(f) for f in fields}:
        raise PromptFileError(f"{path} line {header_no}: expected a header like 'image,row,col,granularity,object', "
                              f"got {header!r}")
    for n, line in lines[1:]:
        values = next(csv.reader([line]))
        if len(values) != len(fields):
            raise PromptFileError(f"{path} line {n}: {len(values)} values for {len(fields)} columns ({line!r})")
        image, prompt = _prompt_from_record(dict(zip(fields, values)), f"{path} line {n}")
        out.add(image, prompt, f"{path} line {n}")
    return out


def _prompts_from_mapping(data: Mapping, where: str) -> PromptTable:
    out = PromptTable()
    for image, recs in data.items():
        for i, rec in enumerate(recs):
            w = f"{where} [{image!r}][{i}]"
            if isinstance(rec, Prompt):
                prompt = rec
            elif isinstance(rec, Mapping):
                prompt = _prompt_from_record(rec, w, image=str(image))[1]
            else:
                vals = list(rec)
                if len(vals) < 2:
                    raise PromptFileError(f"{w}: expected (row, col[, granularity[, object]])")
                keys = ("row", "col", "granularity", "object_id")
                prompt = _prompt_from_record(dict(zip(keys, vals)), w, image=str(image))[1]
            out.add(str(image), prompt, w)
    return out


def match_prompts(prompts: Mapping[str, list[Prompt]], inputs: Sequence[Path],
                  base: Path | None = None) -> tuple[dict[Path, list[Prompt]], list[str]]:
    """Assign prompt keys to input files (absolute path, path relative to ``base`` or cwd, or file name).

    Returns ({input: prompts}, [keys that matched no input]).
    """
    by_abs = {p.resolve(): p for p in inputs}
    by_name: dict[str, list[Path]] = {}
    for p in inputs:
        by_name.setdefault(p.name, []).append(p)
    matched: dict[Path, list[Prompt]] = {}
    unmatched = []
    for key, plist in prompts.items():
        hit = None
        for cand in ([Path(key)] + ([base / key] if base is not None else [])):
            r = cand.expanduser().resolve()
            if r in by_abs:
                hit = by_abs[r]
                break
        if hit is None and len(by_name.get(Path(key).name, [])) == 1:
            hit = by_name[Path(key).name][0]
        if hit is None:
            unmatched.append(key)
        else:
            matched.setdefault(hit, []).extend(plist)
    return matched, unmatched


def check_prompt_images(prompts: Mapping[str, list[Prompt]], inputs: Sequence[Path],
                        base: Path | None = None) -> dict[Path, list[Prompt]]:
    """:func:`match_prompts`, refusing prompts for an image that is not among ``inputs``: such a row is a
    typo or a forgotten input, and skipping it would finish "successfully" without the objects it asks for.

    Raises :class:`PromptFileError` naming the prompt file, the line and the image name (all of them, so one
    run shows every line to fix). Called before any image is read.
    """
    matched, unmatched = match_prompts(prompts, inputs, base)
    if unmatched:
        where = getattr(prompts, "where", {})
        shown = ", ".join(p.name for p in list(inputs)[:5]) + (", ..." if len(inputs) > 5 else "")
        lines = [f"{where.get(key, 'prompts')}: image {key!r} is not among the {len(inputs)} input image(s)"
                 for key in unmatched[:10]]
        more = f" (and {len(unmatched) - 10} more)" if len(unmatched) > 10 else ""
        raise PromptFileError("; ".join(lines) + more + f" (inputs: {shown}): fix the image name in the prompt "
                              f"file (a file name, or a path relative to the prompt file) or add the image to "
                              f"the inputs; nothing was run")
    return matched


def objects_as_clicks(prompts: Sequence[Prompt], granularity: float
                      ) -> tuple[list[tuple[float, float]], list[int], list[float], list[int]]:
    """The clicks of one image as :func:`napari_granseg.segment` takes them, and the label value of each.

    Returns (points (row, col), labels 1/0, granularity per point, object id per positive point). Positive
    points without an id are new objects numbered 1, 2, ... (skipping ids used explicitly); points sharing
    an id form one object (its pixels are the union of its clicks' masks). Negative points (label 0) are
    negative for every object of the image, as in ``gs.segment``. Objects without a positive point are
    dropped (a negative click alone segments nothing).
    """
    explicit = {int(p.object_id) for p in prompts if p.object_id is not None}
    points, labels, gs_, ids = [], [], [], []
    next_id = 1
    for p in prompts:
        points.append((float(p.row), float(p.col)))
        labels.append(int(p.label))
        gs_.append(float(p.granularity) if p.granularity is not None else float(granularity))
        if p.label != 1:
            continue
        if p.object_id is not None:
            ids.append(int(p.object_id))
        else:
            while next_id in explicit or next_id in ids:
                next_id += 1
            ids.append(next_id)
    return points, labels, gs_, ids

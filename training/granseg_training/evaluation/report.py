"""Markdown tables and JSON for evaluation results, written atomically.

Tables print IoU-like numbers in percent (as the papers do: 1-IoU 81.7, AR 74.1, mIoU 60.2) and NoC with two
decimals; the JSON keeps fractions, every per-object/per-class number, and the settings used.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

__all__ = ["interactive_table", "whole_image_table", "fewshot_table", "to_markdown", "write_report"]


def _pct(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.1f}"


def _num(v: Any, digits: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def interactive_table(methods: Mapping[str, dict]) -> str:
    """One row per method: objects, NoC@t for each threshold, failures at max clicks (highest t), 1-IoU %."""
    first = next(iter(methods.values()))["summary"]
    keys = list(first["noc"].keys())
    last = keys[-1] if keys else None
    header = ["method", "objects", *[f"NoC{k}" for k in keys], f">=max clicks @{last}", "1-IoU (%)", "mean g"]
    rows = []
    for name, res in methods.items():
        s = res["summary"]
        rows.append([name, str(s["num_objects"]), *[_num(s["noc"][k]) for k in keys],
                     str(s["noc_over_max"].get(last, "-")) if last else "-", _pct(s["iou_at_1"]),
                     _num(s.get("mean_granularity"))])
    return _table(header, rows)


def whole_image_table(methods: Mapping[str, dict]) -> str:
    """One row per method: images, objects, AR@k in percent, masks per image."""
    first = next(iter(methods.values()))["summary"]
    ks = [k for k in first if k.startswith("AR@")]
    header = ["method", "images", "objects", *[f"{k} (%)" for k in ks], "masks/image"]
    rows = [[name, str(r["summary"]["num_images"]), str(r["summary"]["num_objects"]),
             *[_pct(r["summary"][k]) for k in ks], _num(r["summary"]["mean_masks_per_image"], 1)]
            for name, r in methods.items()]
    return _table(header, rows)


def fewshot_table(result: dict, name: str = "model") -> str:
    """Per-class IoU and FB-IoU (percent), then the mean row (mIoU, FB-IoU)."""
    s = result["summary"]
    rows = [[str(c), str(v["episodes"]), _pct(v["iou"]), _pct(v["fb_iou"])] for c, v in s["per_class"].items()]
    rows.append([f"**mean ({name})**", str(s["num_episodes"]), f"**{_pct(s['miou'])}**", f"**{_pct(s['fb_iou'])}**"])
    return _table(["class", "episodes", "IoU (%)", "FB-IoU (%)"], rows)


def to_markdown(report: dict) -> str:
    """The whole report as markdown: a title line, the settings line, the table."""
    kind = report["kind"]
    lines = [f"# granseg-eval {kind}: {report.get('dataset', '')}", ""]
    if kind == "interactive":
        lines.append(interactive_table(report["methods"]))
    elif kind == "whole":
        lines.append(whole_image_table(report["methods"]))
    elif kind == "fewshot":
        for name, res in report["methods"].items():
            lines.append(fewshot_table(res, name))
    else:
        raise ValueError(f"unknown report kind {kind!r}")
    notes = report.get("notes")
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> null, numpy scalars -> Python, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()
        except (ValueError, TypeError):
            return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_report(report: dict, out_prefix: str | Path) -> tuple[Path, Path]:
    """Write ``<out_prefix>.md`` and ``<out_prefix>.json`` atomically; return both paths."""
    from napari_granseg.io import atomic_path

    prefix = Path(out_prefix)
    if prefix.suffix.lower() in (".md", ".json"):
        prefix = prefix.with_suffix("")
    md_path, json_path = prefix.with_name(prefix.name + ".md"), prefix.with_name(prefix.name + ".json")
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(_clean(report), indent=1, allow_nan=False))
    with atomic_path(md_path) as tmp:
        tmp.write_text(to_markdown(report))
    return md_path, json_path

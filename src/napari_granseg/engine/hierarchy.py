"""Parts-to-wholes hierarchy from whole-image segmentations at several granularities (napari-free).

Why: UnSAMv2 at a low g returns parts (nucleoli), at a high g wholes (cells). Segmenting the same image at
several g values and linking each instance to the instance one level coarser that contains most of it gives
"which nucleolus belongs to which nucleus belongs to which cell", a table microscopists can count with.

Rule: an instance at level g_i gets as parent the instance at the next coarser level g_{i+1} that covers the
largest part of it, if that part is at least ``min_containment`` (0.5) of the instance's area; else 0 (no
parent: e.g. a part found at fine g whose whole was missed at coarse g).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from ..io import atomic_path, atomic_write_bytes

__all__ = ["Hierarchy", "build_hierarchy", "link_levels", "level_name"]

COLUMNS = ("level", "id", "parent_level", "parent_id", "containment", "area")


def level_name(g: float) -> str:
    """'0.3' for 0.3, used in layer names and file names."""
    return f"{float(g):g}"


def link_levels(child: np.ndarray, parent: np.ndarray, min_containment: float = 0.5
                ) -> dict[int, tuple[int, float]]:
    """For each id > 0 in ``child``: (parent id or 0, fraction of the child inside that parent)."""
    if child.shape != parent.shape:
        raise ValueError(f"label images differ in shape: {child.shape} vs {parent.shape}; segment the same image "
                         f"at every granularity")
    c = child.ravel().astype(np.int64)
    p = parent.ravel().astype(np.int64)
    fg = c > 0
    c, p = c[fg], p[fg]
    out: dict[int, tuple[int, float]] = {}
    if c.size == 0:
        return out
    n_p = int(p.max()) + 1
    pair = c * n_p + p
    uniq, counts = np.unique(pair, return_counts=True)
    cid, pid = uniq // n_p, uniq % n_p
    area = dict(zip(*np.unique(c, return_counts=True)))
    best: dict[int, tuple[int, int]] = {}
    for ci, pi, n in zip(cid.tolist(), pid.tolist(), counts.tolist()):
        if pi == 0:
            continue
        if ci not in best or n > best[ci][1] or (n == best[ci][1] and pi < best[ci][0]):
            best[ci] = (pi, n)
    for ci, a in area.items():
        pi, n = best.get(int(ci), (0, 0))
        frac = n / a
        out[int(ci)] = (pi if frac >= min_containment else 0, float(frac))
    return out


def _centroids(labels: np.ndarray) -> dict[int, tuple[float, ...]]:
    ids = labels.ravel()
    fg = ids > 0
    if not fg.any():
        return {}
    n = int(ids.max()) + 1
    counts = np.bincount(ids[fg], minlength=n).astype(np.float64)
    coords = np.indices(labels.shape).reshape(labels.ndim, -1)[:, fg]
    sums = [np.bincount(ids[fg], weights=ax, minlength=n) for ax in coords]
    return {i: tuple(float(s[i] / counts[i]) for s in sums) for i in np.nonzero(counts)[0].tolist()}


def _axis_names(ndim: int) -> list[str]:
    names = ["row", "col"] if ndim >= 2 else ["x"]
    extra = ["plane"] if ndim == 3 else [f"axis{i}" for i in range(ndim - 2)]
    return [f"centroid_{n}" for n in (extra + names if ndim > 2 else names)]


@dataclass
class Hierarchy:
    """Label images per granularity (finest first) and each instance's parent one level coarser.

    parents[g][id] = (parent g or None, parent id or 0, containment fraction).
    """

    levels: dict[float, np.ndarray]
    parents: dict[float, dict[int, tuple[float | None, int, float]]] = field(default_factory=dict)

    @property
    def granularities(self) -> list[float]:
        return list(self.levels)

    def parent(self, g: float, label: int) -> tuple[float | None, int]:
        """(parent level, parent id) of instance ``label`` at level ``g`` ((None, 0) when it has none)."""
        pg, pid, _ = self.parents[g].get(int(label), (None, 0, 0.0))
        return pg, pid

    def children(self, g: float, label: int) -> dict[float, list[int]]:
        """Instances one level finer whose parent is (g, label)."""
        gs = self.granularities
        i = gs.index(g)
        if i == 0:
            return {}
        finer = gs[i - 1]
        return {finer: sorted(c for c, (pg, pid, _) in self.parents[finer].items() if pid == label)}

    def chain(self, g: float, label: int) -> list[tuple[float, int]]:
        """(level, id) from this instance up to its coarsest ancestor."""
        out = [(g, int(label))]
        while True:
            pg, pid = self.parent(*out[-1])
            if pg is None or pid == 0:
                return out
            out.append((pg, pid))

    def to_table(self) -> list[dict]:
        """One row per instance: level, id, parent_level, parent_id, containment, area, centroid_*."""
        rows = []
        for g, lab in self.levels.items():
            cents = _centroids(lab)
            areas = np.bincount(lab.ravel()[lab.ravel() > 0]) if lab.any() else np.zeros(1, np.int64)
            names = _axis_names(lab.ndim)
            for i in sorted(cents):
                pg, pid, frac = self.parents[g].get(i, (None, 0, 0.0))
                row = {"level": g, "id": i, "parent_level": pg, "parent_id": pid, "containment": round(frac, 4),
                       "area": int(areas[i])}
                row.update({n: round(c, 3) for n, c in zip(names, cents[i])})
                rows.append(row)
        return rows

    def features(self, g: float):
        """A pandas DataFrame for ``napari.layers.Labels.features`` of level ``g`` (column 'index' = label id)."""
        import pandas as pd

        rows = [r for r in self.to_table() if r["level"] == g]
        df = pd.DataFrame(rows)
        if df.empty:
            return pd.DataFrame({"index": pd.Series(dtype=int), "parent_id": pd.Series(dtype=int)})
        return df.rename(columns={"id": "index"}).drop(columns=["level"])

    def to_csv(self) -> str:
        rows = self.to_table()
        names = list(COLUMNS) + [k for k in (rows[0] if rows else {}) if k not in COLUMNS]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in names})
        return buf.getvalue()

    def export(self, folder: str | Path, prefix: str = "everything") -> list[Path]:
        """Write one label TIFF per level (``<prefix>_g0.3.tif``, uint16/uint32) and ``<prefix>_hierarchy.csv``,
        each atomically (an interrupted export leaves no half-written file). Returns the paths."""
        import tifffile

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for g, lab in self.levels.items():
            path = folder / f"{prefix}_g{level_name(g)}.tif"
            data = lab.astype(np.uint16 if lab.max(initial=0) < 65536 else np.uint32)
            with atomic_path(path) as tmp:
                tifffile.imwrite(tmp, data, metadata={"granularity": float(g)})
            paths.append(path)
        paths.append(atomic_write_bytes(folder / f"{prefix}_hierarchy.csv", self.to_csv().encode()))
        return paths


def build_hierarchy(levels: Mapping[float, np.ndarray], min_containment: float = 0.5) -> Hierarchy:
    """Link instances across granularities: each instance at a finer g -> the instance at the next coarser g
    containing most of it (if >= ``min_containment`` of its area, else parent 0). Levels sorted by g."""
    if not levels:
        raise ValueError("give at least one level: {granularity: label image}")
    ordered = {float(g): np.asarray(levels[g]) for g in sorted(levels, key=float)}
    shapes = {lab.shape for lab in ordered.values()}
    if len(shapes) != 1:
        raise ValueError(f"all label images must have the same shape, got {sorted(shapes)}")
    gs = list(ordered)
    parents: dict[float, dict[int, tuple[float | None, int, float]]] = {}
    for i, g in enumerate(gs):
        if i + 1 < len(gs):
            coarse = gs[i + 1]
            links = link_levels(ordered[g], ordered[coarse], min_containment)
            parents[g] = {c: (coarse if pid else None, pid, frac) for c, (pid, frac) in links.items()}
        else:
            ids = np.unique(ordered[g])
            parents[g] = {int(c): (None, 0, 0.0) for c in ids[ids > 0]}
    return Hierarchy(ordered, parents)

"""Interactive evaluation: the NoC click loop, the granularity oracle, and dataset summaries.

Protocol (RITM/isegm, as UnSAMv2 and GraCo evaluate): up to ``max_clicks`` simulated clicks per object; every
click sends all clicks so far plus the previous low-resolution logits as ``mask_input``; single-mask output;
the mask is ``logits > logit_threshold`` (-1 in UnSAMv2's evaluation). Granularity:

- fixed g (or None for models without a granularity input) -> one simulation per object;
- ``"oracle"`` -> one simulation per g in 0.1..1.0; the object is scored with the g needing the fewest clicks
  to reach ``target_iou``; ties go to the best first-click IoU, then to the smaller g (GraCo/UnSAMv2's rule).

Stock SAM 2 (``first_click_multimask=True``): its three masks on the first click, the best one kept
(``first_mask="oracle"``: best IoU with the ground truth, the usual "best of 3"; ``"score"``: highest predicted
IoU, what a user without ground truth gets); later clicks single-mask.

Predictors are duck-typed (:class:`InteractivePredictor`) so tests use fakes and this module never imports
torch or the model code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Protocol, Sequence

import numpy as np

from .clicker import Click, Clicker
from .metrics import DEFAULT_NOC_THRESHOLDS, iou, noc, summarize_nocs

__all__ = ["InteractivePredictor", "Trajectory", "simulate_clicks", "evaluate_object", "evaluate_interactive",
           "GRANULARITY_GRID"]

#: The granularities the oracle searches (0.1, 0.2, ..., 1.0), as upstream.
GRANULARITY_GRID: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(1, 11))


class InteractivePredictor(Protocol):
    """What the loop needs: SAM 2's ``SAM2ImagePredictor`` interface (``GranularityPredictor`` adds ``granularity``)."""

    def set_image(self, image: np.ndarray) -> None: ...

    def predict(self, point_coords: Any = None, point_labels: Any = None, multimask_output: bool = False,
                mask_input: Any = None, return_logits: bool = False,
                **kwargs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@dataclass
class Trajectory:
    """One simulation on one object: IoU after each click, the clicks, and the granularity used."""

    ious: list[float]
    clicks: list[Click]
    granularity: float | None
    reached_target_at: int | None = None  # clicks needed to reach the target IoU (None: never)

    @property
    def clicks_to_target(self) -> float:
        return float("inf") if self.reached_target_at is None else float(self.reached_target_at)


def _binarize(masks: np.ndarray, logit_threshold: float) -> np.ndarray:
    masks = np.asarray(masks)
    return masks if masks.dtype == bool else masks > logit_threshold


def simulate_clicks(predictor: InteractivePredictor, gt: np.ndarray, ignore: np.ndarray | None = None, *,
                    granularity: float | None = None, max_clicks: int = 20, stop_iou: float = 0.90,
                    target_iou: float | None = None, logit_threshold: float = -1.0,
                    first_click_multimask: bool = False, first_mask: Literal["oracle", "score"] = "oracle",
                    give_up_after: int | None = None) -> Trajectory:
    """Run the click loop on one object of the image already set on ``predictor``.

    Stops when IoU >= ``stop_iou``, after ``max_clicks``, or (oracle pruning) once more than ``give_up_after``
    clicks were made without reaching ``target_iou`` (such a run can no longer win the oracle).
    """
    if max_clicks < 1:
        raise ValueError("max_clicks must be at least 1")
    target = stop_iou if target_iou is None else target_iou
    clicker = Clicker(gt, ignore)
    pred = np.zeros(clicker.gt.shape, dtype=bool)
    mask_input = None
    traj = Trajectory([], [], granularity)
    extra = {} if granularity is None else {"granularity": float(granularity)}
    for k in range(max_clicks):
        clicker.make_next_click(pred)
        coords, labels = clicker.prompts()
        multi = first_click_multimask and k == 0
        masks, scores, low = predictor.predict(point_coords=coords, point_labels=labels, multimask_output=multi,
                                               mask_input=mask_input, return_logits=True, **extra)
        binary = _binarize(masks, logit_threshold)
        if binary.ndim == 2:
            binary = binary[None]
        if binary.shape[-2:] != clicker.gt.shape:
            raise ValueError(f"the predictor returned masks of shape {binary.shape[-2:]} for an image of shape "
                             f"{clicker.gt.shape}: masks must come back at the image's resolution")
        if binary.shape[0] > 1:
            if first_mask == "oracle":
                idx = int(np.argmax([iou(clicker.gt, m, clicker.ignore) for m in binary]))
            else:
                idx = int(np.argmax(np.asarray(scores).reshape(-1)))
        else:
            idx = 0
        pred = binary[idx]
        mask_input = None if low is None else np.asarray(low)[idx:idx + 1]
        value = iou(clicker.gt, pred, clicker.ignore)
        traj.ious.append(value)
        if traj.reached_target_at is None and value >= target:
            traj.reached_target_at = k + 1
        if value >= stop_iou:
            break
        if give_up_after is not None and traj.reached_target_at is None and k + 1 > give_up_after:
            break
    traj.clicks = list(clicker.clicks)
    return traj


def _choose_oracle(runs: Sequence[Trajectory]) -> Trajectory:
    """Fewest clicks to the target IoU; ties: best first-click IoU; then the first (smallest g)."""
    best = min(r.clicks_to_target for r in runs)
    tied = [r for r in runs if r.clicks_to_target == best]
    return tied[int(np.argmax([r.ious[0] for r in tied]))]


def evaluate_object(predictor: InteractivePredictor, gt: np.ndarray, ignore: np.ndarray | None = None, *,
                    granularity: float | str | None = "oracle", grid: Sequence[float] = GRANULARITY_GRID,
                    max_clicks: int = 20, thresholds: Sequence[float] = DEFAULT_NOC_THRESHOLDS,
                    target_iou: float = 0.90, **kwargs: Any) -> Trajectory:
    """The trajectory that scores one object (the oracle's pick when ``granularity == "oracle"``).

    Simulations run until the highest NoC threshold (and the target) is reached, so no NoC@t is truncated.
    """
    stop = max([target_iou, *thresholds])
    common = dict(max_clicks=max_clicks, stop_iou=stop, target_iou=target_iou, **kwargs)
    if granularity != "oracle":
        g = None if granularity is None else float(granularity)  # type: ignore[arg-type]
        return simulate_clicks(predictor, gt, ignore, granularity=g, **common)
    runs: list[Trajectory] = []
    best = max_clicks
    for g in grid:
        run = simulate_clicks(predictor, gt, ignore, granularity=float(g),
                              give_up_after=best if best < max_clicks else None, **common)
        runs.append(run)
        if run.reached_target_at is not None:
            best = min(best, run.reached_target_at)
    return _choose_oracle(runs)


@dataclass
class ObjectResult:
    sample_id: str
    object_index: int
    granularity: float | None
    ious: list[float]
    clicks: list[tuple[int, int, bool]] = field(default_factory=list)
    noc: dict[str, int] = field(default_factory=dict)


def evaluate_interactive(predictor: InteractivePredictor, samples: Iterable, *,
                         granularity: float | str | None = "oracle", grid: Sequence[float] = GRANULARITY_GRID,
                         max_clicks: int = 20, thresholds: Sequence[float] = DEFAULT_NOC_THRESHOLDS,
                         target_iou: float = 0.90, logit_threshold: float = -1.0,
                         first_click_multimask: bool = False, first_mask: Literal["oracle", "score"] = "oracle",
                         min_area: int = 1, progress: Callable[[str], None] | None = None) -> dict:
    """NoC@t, failures at ``max_clicks`` and 1-IoU over every object of every sample.

    ``samples``: :class:`~granseg_training.evaluation.readers.Sample`-like (``image``, ``masks``, ``id``,
    optional ``ignore``). Each image is embedded once for all its objects and granularities.
    Returns ``{"summary": {...}, "objects": [...], "settings": {...}}`` (JSON-ready).
    """
    from .metrics import threshold_key

    objects: list[ObjectResult] = []
    for sample in samples:
        masks = [m for m in sample.masks if int(np.count_nonzero(m)) >= max(1, min_area)]
        if not masks:
            continue
        predictor.set_image(sample.image)
        ignore = getattr(sample, "ignore", None)
        for j, gt in enumerate(masks):
            traj = evaluate_object(predictor, gt, ignore, granularity=granularity, grid=grid,
                                   max_clicks=max_clicks, thresholds=thresholds, target_iou=target_iou,
                                   logit_threshold=logit_threshold, first_click_multimask=first_click_multimask,
                                   first_mask=first_mask)
            objects.append(ObjectResult(
                str(sample.id), j, traj.granularity, [float(v) for v in traj.ious],
                [(c.row, c.col, c.positive) for c in traj.clicks],
                {threshold_key(t): noc(traj.ious, t, max_clicks) for t in thresholds}))
        if progress is not None:
            progress(f"{sample.id}: {len(masks)} object(s)")
    summary = summarize_nocs([o.ious for o in objects], thresholds, max_clicks)
    chosen = [o.granularity for o in objects if o.granularity is not None]
    if granularity == "oracle" and chosen:
        summary["mean_granularity"] = float(np.mean(chosen))
    return {
        "summary": summary,
        "objects": [o.__dict__ for o in objects],
        "settings": {"granularity": granularity, "grid": list(grid) if granularity == "oracle" else None,
                     "max_clicks": max_clicks, "thresholds": list(thresholds), "target_iou": target_iou,
                     "logit_threshold": logit_threshold, "first_click_multimask": first_click_multimask,
                     "first_mask": first_mask if first_click_multimask else None, "min_area": min_area},
    }

"""What to tell a person after a fine-tune, read from its score on the held-back objects (never trained on).

Why it exists: a fine-tune always produces a model, and a person who sees "saved" trusts it. When the held-back
objects say the new model is worse than the one it started from, or still poor, the person should hear it at
the moment they decide which model to use, in the same words in the widget and on the command line. The
remedy named is the one measured to help (docs/benchmarks.md, fine-tuning: from four labelled images the demo
model memorises them; 16 membrane images lifted unseen cells from 0.73 to 0.83 with the old domain kept, given
3000 steps; at 800 steps they did not help, which is why the automatic steps grow with the labelled images and
the advice says to leave them on auto).
"""
from __future__ import annotations

import math

__all__ = ["next_step_advice", "GOOD_ENOUGH", "WORSE_BY"]

#: Held-back click IoU below this: the fine-tuned model still misses much of what the person labelled.
GOOD_ENOUGH = 0.8
#: Held-back click IoU lower than the base model's by more than this: the fine-tune made things worse.
WORSE_BY = 0.02


def next_step_advice(record: dict) -> str:
    """One or two sentences for the result of a fine-tune (``LoadedModel.info["finetune"]``), or "" when the
    held-back score gives no reason for advice (or there were no held-back objects to score)."""
    before, after = record.get("held_back_iou_before"), record.get("held_back_iou_after")
    if before is None or after is None or not (math.isfinite(before) and math.isfinite(after)):
        return ""
    if after < before - WORSE_BY:
        return (f"The new model does worse than the one it started from on objects it was not trained on "
                f"({after:.2f} vs {before:.2f}): keep using that model for these images, or label more images "
                f"and fine-tune again.")
    if after < GOOD_ENOUGH:
        return (f"Objects it was not trained on still score below {GOOD_ENOUGH:.2f}: label more images of this "
                f"kind (as varied as your data) and fine-tune again with the steps on auto (they grow with the "
                f"labelled images); from a few labelled images the model learns those images rather than the kind.")
    return ""

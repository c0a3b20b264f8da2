"""Evaluation with the papers' metrics on a user's data: NoC / 1-IoU (interactive), AR (whole image), mIoU / FB-IoU (few-shot).

Importing this package does not import torch or the model code; the CLI loads models only when it runs.
"""
from .clicker import Click, Clicker
from .fewshot import FewShotAccumulator, evaluate_fewshot
from .interactive import evaluate_interactive, simulate_clicks
from .metrics import iou, noc, summarize_nocs
from .readers import Sample, read_dataset
from .whole_image import average_recall, evaluate_whole_image

__all__ = [
    "Click", "Clicker", "FewShotAccumulator", "evaluate_fewshot", "evaluate_interactive", "simulate_clicks",
    "iou", "noc", "summarize_nocs", "Sample", "read_dataset", "average_recall", "evaluate_whole_image",
]

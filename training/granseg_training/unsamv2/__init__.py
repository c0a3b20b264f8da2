"""UnSAMv2 training: data with per-mask granularity, click simulation, losses, the trainer.

Entry points: :func:`train_unsamv2` with an :class:`UnSAMv2TrainConfig`, or ``granseg-train unsamv2``.
"""
from .config import UnSAMv2TrainConfig
from ..pseudolabels.granularity import granularity_of_areas
from .trainer import UnSAMv2Trainer, train_unsamv2

__all__ = ["UnSAMv2TrainConfig", "UnSAMv2Trainer", "train_unsamv2", "granularity_of_areas"]

"""Episodic few-shot trainer for SANSA adapters (``granseg-train sansa``).

Only the adapters train by default (SANSA's recipe on a frozen SAM 2.0); ``trainable='all'`` trains every
weight, for the tiny from-scratch models of the test suite and the demo.
"""
from .config import SansaTrainConfig
from .trainer import SansaTrainer, train_sansa

__all__ = ["SansaTrainConfig", "SansaTrainer", "train_sansa"]

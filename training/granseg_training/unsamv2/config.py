"""The UnSAMv2 training configuration: one dataclass, loadable from YAML or JSON, overridable by CLI flags."""
from __future__ import annotations

from dataclasses import dataclass, field

from napari_granseg.devices import check_precision

from ..config_io import ConfigIO

from .augment import AugmentConfig
from napari_granseg.finetuning.losses import LossWeights

__all__ = ["UnSAMv2TrainConfig"]


@dataclass
class UnSAMv2TrainConfig(ConfigIO):
    """Everything a run needs. Defaults = UnSAMv2's published recipe (upstream mode, lr 1e-4 -> 1e-5, batch 2).

    trainable: "upstream" (only the granularity modules + LoRA train; the rest is frozen, as UnSAMv2) or
    "all" (every weight trains: for tiny models started from random weights, no pretrained base offline).
    data: "synthetic" (nested cell scenes) or "coco" (pseudo-label JSON file/folder in ``coco_json``).
    video_prob: share of steps that are memory episodes (``video_frames`` frames made by drifting the image
    up to ``video_max_drift`` px per frame, ``video_objects`` objects clicked on the first frame and followed
    through SAM 2's memory). Upstream trains on images only (0), which leaves a from-scratch model's memory
    untrained; the tiny recipes use it so the demo can propagate through stacks.
    precision: one of ``napari_granseg.devices.PRECISIONS``; "auto" trains in bf16 autocast on CUDA GPUs that
    support it (as upstream) and in float32 elsewhere, "fp32" never autocasts, "bf16" always does.
    """

    _what = "UnSAMv2"

    # model
    model_config: str = "configs/sam2.1/sam2.1_hiera_s.yaml"
    overrides: list[str] = field(default_factory=list)
    init_checkpoint: str | None = None
    trainable: str = "upstream"
    lora: bool = True
    lora_rank: int = 8
    lora_alpha: float = 16.0
    # data
    data: str = "synthetic"
    coco_json: str | None = None
    image_root: str | None = None
    scene_size: int = 128
    n_cells: list[int] = field(default_factory=lambda: [1, 3])
    max_masks: int = 30
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # prompts
    correction_clicks: int = 3
    random_corrections: bool = True
    inner_click_prob: float = 0.0
    # memory (video) episodes: 0 = images only, as upstream
    video_prob: float = 0.0
    video_frames: int = 3
    video_max_drift: float = 6.0
    video_objects: int = 3
    # optimisation
    steps: int = 1000
    batch_size: int = 2
    lr: float = 1e-4
    lr_min: float = 1e-5
    weight_decay: float = 1e-5
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    loss: LossWeights = field(default_factory=LossWeights)
    precision: str = "auto"
    # runtime
    device: str = "auto"
    num_threads: int | None = None
    num_workers: int = 0
    seed: int = 0
    out_dir: str = "runs/unsamv2"
    checkpoint_name: str = "unsamv2_trained.pt"
    save_every: int = 0
    progress: bool = True
    log_every: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        if isinstance(self.loss, dict):
            self.loss = LossWeights(**self.loss)
        if isinstance(self.n_cells, int):
            self.n_cells = [self.n_cells, self.n_cells]
        if self.trainable not in ("upstream", "all"):
            raise ValueError(f"trainable={self.trainable!r}: use 'upstream' (granularity modules + LoRA) or 'all'")
        if self.data not in ("synthetic", "coco"):
            raise ValueError(f"data={self.data!r}: use 'synthetic' or 'coco' (with coco_json=FILE_OR_FOLDER)")
        if self.data == "coco" and not self.coco_json:
            raise ValueError("data='coco' needs coco_json (a pseudo-label JSON file or a folder of them)")
        if not 0.0 <= self.video_prob <= 1.0:
            raise ValueError(f"video_prob={self.video_prob}: a probability in [0, 1] (0 = image steps only)")
        if self.video_prob > 0 and self.video_frames < 2:
            raise ValueError(f"video_frames={self.video_frames}: a memory episode needs at least 2 frames")
        check_precision(self.precision)
        if self.trainable == "upstream" and not self.lora:
            raise ValueError("trainable='upstream' trains LoRA: keep lora=True")

"""The SANSA training configuration: one dataclass, from YAML/JSON or CLI flags."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config_io import ConfigIO

__all__ = ["SansaTrainConfig"]


@dataclass
class SansaTrainConfig(ConfigIO):
    """Defaults = SANSA's published recipe (AdamW 1e-4, betas (0.9, 0.999), wd 0, cosine per iteration, clip 0.1,
    1 reference + 1 query, mask prompts, focal + dice 1:1 on logits upsampled to 640).

    trainable: "adapters" (SANSA) or "all" (from-scratch tiny models; the file then holds the base too).
    data: "synthetic" (discs vs triangles, ``napari_granseg.synthetic.shapes_scene``) or "folder"
    (``data_root``/images + ``data_root``/labels, same file stems; every label id > 0 is a class).
    prompt: "mask" or "multi" (mask / 1-20 points / scribble / box per reference).
    """

    _what = "SANSA"

    # model
    model_config: str = "configs/sam2/sam2_hiera_l.yaml"
    overrides: list[str] = field(default_factory=list)
    base_checkpoint: str | None = None
    init_adapters: str | None = None
    channel_factor: float = 0.3
    trainable: str = "adapters"
    # data
    data: str = "synthetic"
    data_root: str | None = None
    images_dir: str = "images"
    labels_dir: str = "labels"
    scene_size: int = 128
    n_objects: list[int] = field(default_factory=lambda: [2, 4])
    min_class_pixels: int = 16
    # episodes
    shots: int = 1
    prompt: str = "mask"
    image_size: int | None = 640
    loss_size: int | None = 640
    # optimisation
    steps: int = 1000
    batch_size: int = 4
    lr: float = 1e-4
    lr_min: float = 0.0
    warmup_steps: int = 0
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float | None = 0.1
    focal_weight: float = 1.0
    dice_weight: float = 1.0
    # runtime
    device: str = "auto"
    num_threads: int | None = None
    seed: int = 0
    out_dir: str = "runs/sansa"
    checkpoint_name: str = "sansa_adapters.pth"
    log_every: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        if self.trainable not in ("adapters", "all"):
            raise ValueError(f"trainable must be 'adapters' or 'all', not {self.trainable!r}")
        if self.data not in ("synthetic", "folder"):
            raise ValueError(f"data must be 'synthetic' or 'folder', not {self.data!r}")
        if self.data == "folder" and not self.data_root:
            raise ValueError("data='folder' needs data_root= (a folder with images/ and labels/ sub-folders)")
        if self.prompt not in ("mask", "multi"):
            raise ValueError(f"prompt must be 'mask' or 'multi', not {self.prompt!r}")
        if self.shots < 1:
            raise ValueError("shots must be >= 1")
        self.betas = tuple(self.betas)

"""Build a SAM 2 model from a packaged ``sam2`` config or from one of this plugin's own YAML configs.

Why: Meta's ``build_sam2`` only knows configs inside the ``sam2`` package; our demo/test models use a reduced
config shipped with this plugin. Both go through the same Hydra instantiation, so a model built here is a
plain ``SAM2Base`` (or a subclass named by ``target``) that Meta's predictors accept.
"""
from __future__ import annotations

import importlib.resources as resources
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import OmegaConf

__all__ = ["build_sam2_base", "resolve_config", "PLUGIN_CONFIGS"]

#: Short names of configs shipped inside ``napari_granseg/configs``.
PLUGIN_CONFIGS = ("granseg_tiny.yaml",)


def resolve_config(config: str | Path) -> tuple[str, Path | None]:
    """Return ``(kind, path)``: ``("plugin"|"file", path)`` for YAML files, ``("sam2", None)`` for packaged names."""
    text = str(config)
    name = Path(text).name
    if name in PLUGIN_CONFIGS and not Path(text).exists():
        return "plugin", Path(str(resources.files("napari_granseg") / "configs" / name))
    if Path(text).is_file():
        return "file", Path(text)
    return "sam2", None


def _compose(config: str | Path, overrides: Sequence[str]):
    kind, path = resolve_config(config)
    if kind == "sam2":
        import sam2  # noqa: F401  (initialises Hydra's search path on sam2's packaged configs)
        from hydra import compose

        try:
            cfg = compose(config_name=str(config), overrides=list(overrides))
        except Exception as err:  # hydra's MissingConfigException and friends
            raise FileNotFoundError(
                f"SAM 2 config {config!r} not found. Use a config packaged in sam2 (e.g. "
                f"'configs/sam2.1/sam2.1_hiera_s.yaml', 'configs/sam2/sam2_hiera_l.yaml'), one of this plugin's "
                f"{PLUGIN_CONFIGS}, or a path to a YAML file."
            ) from err
    else:
        cfg = OmegaConf.load(path)
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    OmegaConf.resolve(cfg)
    return cfg


def build_sam2_base(
    config: str | Path,
    overrides: Sequence[str] = (),
    target: type | str | None = None,
    device: str | torch.device = "cpu",
) -> torch.nn.Module:
    """Instantiate a SAM 2 model with random weights (load weights afterwards).

    ``target``: a ``SAM2Base`` subclass (or its dotted path) to instantiate instead of the config's own, e.g.
    a video predictor class so the same model serves images and stacks.
    """
    from hydra.utils import instantiate

    overrides = list(overrides)
    if target is not None:
        dotted = target if isinstance(target, str) else f"{target.__module__}.{target.__qualname__}"
        overrides.append(f"++model._target_={dotted}")
    cfg = _compose(config, overrides)
    model = instantiate(cfg.model, _recursive_=True)
    return model.to(device).eval()

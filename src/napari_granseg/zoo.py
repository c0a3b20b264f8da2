"""The model zoo: named models, where their weights come from, where they are cached, and safe loading.

- ``load_model("unsamv2-plus")`` finds the checkpoint in the cache (``GRANSEG_CACHE_DIR`` or the per-user
  cache dir), downloads it when missing (progress bar, sha256 checked when known, atomic: pooch writes a
  temporary file and moves it into place), and builds the model.
- Offline, the error names the model, the URL and the exact path to put the file by hand. Files saved under
  their upstream names (e.g. ``unsamv2_plus_ckpt.pt``) are found as they are: no renaming by hand.
- ``load_model("file.pt", kind=..., config=...)`` loads a local checkpoint; ``load_model(None, kind=...)``
  builds random weights (tests).
- With no real UnSAMv2 checkpoint present, :func:`default_model_name` falls back to the bundled demo model.
"""
from __future__ import annotations

import importlib.resources as resources
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .checkpoints import CheckpointError, read_state_dict, check_keys
from .devices import resolve_device
from .models.loaded import LoadedModel

__all__ = ["ModelSpec", "ZOO", "cache_dir", "checkpoint_path", "fetch_checkpoint", "load_model",
           "default_model_name", "ModelDownloadError", "list_models", "KINDS"]

log = logging.getLogger(__name__)
KINDS = ("unsamv2", "sam2", "sansa")
_META = "https://dl.fbaipublicfiles.com/segment_anything_2"
_GDRIVE = "https://drive.google.com/uc?export=download&id={}"


class ModelDownloadError(RuntimeError):
    """A checkpoint is not in the cache and could not be downloaded; the message says where to put it."""


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry. ``filename`` is the name in the cache dir; ``aliases`` other names it is found under."""

    name: str
    kind: str
    config: str
    filename: str
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    size_mb: float | None = None
    hf_repo: str | None = None
    aliases: tuple[str, ...] = ()
    base: str | None = None              # SANSA: the zoo name of the SAM 2 base checkpoint
    bundled: bool = False                # ships inside the package (demo models)
    description: str = ""
    overrides: tuple[str, ...] = field(default_factory=tuple)


ZOO: dict[str, ModelSpec] = {s.name: s for s in [
    ModelSpec("sam2.1-hiera-tiny", "sam2", "configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt",
              (f"{_META}/092824/sam2.1_hiera_tiny.pt",), size_mb=156, hf_repo="facebook/sam2.1-hiera-tiny",
              description="Meta SAM 2.1 Hiera-T (baseline)"),
    ModelSpec("sam2.1-hiera-small", "sam2", "configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt",
              (f"{_META}/092824/sam2.1_hiera_small.pt",), size_mb=184, hf_repo="facebook/sam2.1-hiera-small",
              description="Meta SAM 2.1 Hiera-S (UnSAMv2's base)"),
    ModelSpec("sam2.1-hiera-base-plus", "sam2", "configs/sam2.1/sam2.1_hiera_b+.yaml",
              "sam2.1_hiera_base_plus.pt", (f"{_META}/092824/sam2.1_hiera_base_plus.pt",), size_mb=324,
              hf_repo="facebook/sam2.1-hiera-base-plus", description="Meta SAM 2.1 Hiera-B+"),
    ModelSpec("sam2.1-hiera-large", "sam2", "configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt",
              (f"{_META}/092824/sam2.1_hiera_large.pt",), size_mb=898, hf_repo="facebook/sam2.1-hiera-large",
              description="Meta SAM 2.1 Hiera-L"),
    ModelSpec("sam2-hiera-large", "sam2", "configs/sam2/sam2_hiera_l.yaml", "sam2_hiera_large.pt",
              (f"{_META}/072824/sam2_hiera_large.pt",), size_mb=898, hf_repo="facebook/sam2-hiera-large",
              description="Meta SAM 2.0 Hiera-L (SANSA's base)"),
    ModelSpec("unsamv2", "unsamv2", "configs/sam2.1/sam2.1_hiera_s.yaml", "unsamv2_ckpt.pt",
              (_GDRIVE.format("1iYmYFeJxY4aI1lG5F2ZFL8tzzyGkCgX0"),), aliases=("unsamv2.pt", "UnSAMv2.pt"),
              description="UnSAMv2 (SAM 2.1-S + granularity), Google Drive id 1iYmYFeJxY4aI1lG5F2ZFL8tzzyGkCgX0"),
    ModelSpec("unsamv2-plus", "unsamv2", "configs/sam2.1/sam2.1_hiera_s.yaml", "unsamv2_plus_ckpt.pt",
              (_GDRIVE.format("1M56QN2CWfou7h5azxJvc_igmbQh9D2af"),), aliases=("unsamv2+.pt", "UnSAMv2+.pt"),
              description="UnSAMv2+ (more training data), Google Drive id 1M56QN2CWfou7h5azxJvc_igmbQh9D2af"),
    ModelSpec("sansa-universal", "sansa", "configs/sam2/sam2_hiera_l.yaml", "sansa_universal.pth",
              ("https://github.com/ClaudiaCuttano/SANSA/releases/download/v1.0.0/sansa_universal.pth",
               _GDRIVE.format("1nPOdRfMfo3MQRSi1qkPEri7Gl6FCEVHe")), base="sam2-hiera-large",
              description="SANSA Universal adapters (any prompt, channel factor 0.8)"),
    ModelSpec("sansa-generalist", "sansa", "configs/sam2/sam2_hiera_l.yaml", "adapter_generalist.pth",
              (_GDRIVE.format("1ks88lD2exj6GhtCVEK6aatvd1Pq2BBZq"),), base="sam2-hiera-large",
              description="SANSA generalist adapters (channel factor 0.8)"),
    ModelSpec("sansa-fss1000", "sansa", "configs/sam2/sam2_hiera_l.yaml", "adapter_fss_fold0.pth",
              (_GDRIVE.format("1Y_W3cL-qxK-J5-yCJk1fXBwNwrhod5RS"),), base="sam2-hiera-large",
              description="SANSA FSS-1000 adapters (channel factor 0.3)"),
    ModelSpec("unsamv2-demo", "unsamv2", "granseg_tiny.yaml", "unsamv2_demo.pt", bundled=True,
              description="DEMO: tiny UnSAMv2 trained on the plugin's synthetic cells (not for real data)"),
    ModelSpec("sansa-demo", "sansa", "granseg_tiny.yaml", "sansa_demo.pt", bundled=True,
              description="DEMO: tiny SANSA trained on synthetic discs/triangles (not for real data)"),
]}


def list_models() -> list[str]:
    """Zoo names, with a one-line description each."""
    return [f"{s.name}: {s.description}" for s in ZOO.values()]


def cache_dir() -> Path:
    """Where checkpoints live: ``$GRANSEG_CACHE_DIR``, else the per-user cache (e.g. ~/.cache/napari-granseg)."""
    env = os.environ.get("GRANSEG_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("napari-granseg"))


def checkpoint_path(spec: ModelSpec | str) -> Path:
    """The path where ``spec``'s checkpoint is (or should be put by hand)."""
    spec = ZOO[spec] if isinstance(spec, str) else spec
    if spec.bundled:
        return Path(str(resources.files("napari_granseg") / "demo" / spec.filename))
    return cache_dir() / spec.filename


def _find_existing(spec: ModelSpec) -> Path | None:
    for name in (spec.filename, *spec.aliases):
        p = cache_dir() / name
        if p.is_file():
            return p
    return None


def fetch_checkpoint(spec: ModelSpec | str, download: bool = True) -> Path:
    """Return a local path to ``spec``'s checkpoint, downloading it if needed (and allowed)."""
    spec = ZOO[spec] if isinstance(spec, str) else spec
    if spec.bundled:
        path = checkpoint_path(spec)
        if not path.is_file():
            raise ModelDownloadError(
                f"the bundled demo checkpoint {path} is missing from this installation. Rebuild it with "
                f"`granseg-train demo` (see docs/checkpoints.md) or reinstall napari-granseg.")
        return path
    found = _find_existing(spec)
    if found is not None:
        return found
    target = checkpoint_path(spec)
    manual = (f"Download it on a machine with internet from {' or '.join(spec.urls) or spec.hf_repo} and put it at "
              f"{target} (or set GRANSEG_CACHE_DIR to the folder holding it), or pass the file path to "
              f"load_model(path, kind={spec.kind!r}).")
    if not download or os.environ.get("GRANSEG_OFFLINE") == "1" or not spec.urls:
        raise ModelDownloadError(f"checkpoint for model {spec.name!r} is not in {target.parent}. {manual}")
    import pooch

    errors = []
    for url in spec.urls:
        try:
            path = pooch.retrieve(url, known_hash=f"sha256:{spec.sha256}" if spec.sha256 else None,
                                  fname=spec.filename, path=target.parent, progressbar=_has_tqdm(),
                                  downloader=pooch.HTTPDownloader(progressbar=_has_tqdm(), timeout=30))
            return Path(path)
        except Exception as err:  # network errors, HTTP errors, hash mismatch
            errors.append(f"{url}: {type(err).__name__}: {err}")
    raise ModelDownloadError(f"could not download model {spec.name!r} ({'; '.join(errors)[:600]}). {manual}")


def _has_tqdm() -> bool:
    try:
        import tqdm  # noqa: F401

        return True
    except ImportError:  # pragma: no cover
        return False


def default_model_name(kind: str = "unsamv2") -> str:
    """The best model present without downloading: a real checkpoint if cached, else the demo (logged)."""
    order = {"unsamv2": ("unsamv2-plus", "unsamv2"), "sansa": ("sansa-universal", "sansa-generalist")}[kind]
    for name in order:
        spec = ZOO[name]
        if _find_existing(spec) is not None and (spec.base is None or _find_existing(ZOO[spec.base])):
            return name
    log.warning("no %s checkpoint in %s: using the DEMO model (trained on synthetic data only). Download a "
                "real one with napari_granseg.load_model(%r).", kind, cache_dir(), order[0])
    return f"{kind}-demo"


def _build(kind: str, config: str, device: torch.device, overrides: Sequence[str] = ()) -> torch.nn.Module:
    if kind == "unsamv2":
        from .models.unsamv2 import build_unsamv2

        return build_unsamv2(config, overrides=overrides, device="cpu")
    if kind == "sam2":
        from sam2.sam2_video_predictor import SAM2VideoPredictor

        from .models.builder import build_sam2_base

        return build_sam2_base(config, overrides, target=SAM2VideoPredictor)
    raise ValueError(f"unknown model kind {kind!r}; use one of {KINDS}")


def _load_weights(kind: str, module: torch.nn.Module, path: Path) -> None:
    if kind == "unsamv2":
        from .models.unsamv2 import load_unsamv2_checkpoint

        load_unsamv2_checkpoint(module, path)
        return
    state = read_state_dict(path, "SAM 2 checkpoint")
    missing, unexpected = module.load_state_dict(state, strict=False)
    hint = ("This looks like an UnSAMv2 checkpoint: load it with kind='unsamv2'."
            if any("gra_token" in k or "fourier_embedder" in k for k in unexpected) else "")
    check_keys(missing, unexpected, path, "sam2", hint=hint)


def load_model(name_or_path: str | os.PathLike | None = None, kind: str | None = None, config: str | None = None,
               device: str | torch.device = "auto", base_checkpoint: str | os.PathLike | None = None,
               download: bool = True, overrides: Sequence[str] = ()) -> LoadedModel:
    """Load a model by zoo name or checkpoint path (see module docstring). Returns a :class:`LoadedModel`.

    ``name_or_path=None`` with ``kind``: random weights (tests). ``name_or_path=None`` without kind: the
    default UnSAMv2 model (a real checkpoint if cached, otherwise the demo).
    """
    dev = resolve_device(device)
    spec: ModelSpec | None = None
    ckpt: Path | None = None
    if name_or_path is None and kind is None:
        name_or_path = default_model_name("unsamv2")
    if name_or_path is not None and str(name_or_path) in ZOO:
        spec = ZOO[str(name_or_path)]
        if kind is not None and kind != spec.kind:
            raise ValueError(f"model {spec.name!r} is of kind {spec.kind!r}, not {kind!r}")
        kind, config = spec.kind, config or spec.config
        ckpt = fetch_checkpoint(spec, download=download)
        if spec.kind == "sansa" and base_checkpoint is None and spec.base:
            base_checkpoint = fetch_checkpoint(spec.base, download=download)
        if spec.bundled and spec.kind == "sansa" and base_checkpoint is None:
            base_checkpoint = ckpt
    elif name_or_path is not None:
        ckpt = Path(name_or_path).expanduser()
        if not ckpt.is_file():
            raise FileNotFoundError(
                f"{name_or_path!r} is neither a zoo model ({', '.join(ZOO)}) nor an existing file.")
        if kind is None:
            raise ValueError(f"give kind= for a checkpoint file ({' | '.join(KINDS)}), e.g. "
                             f"load_model({str(name_or_path)!r}, kind='unsamv2', config='configs/sam2.1/sam2.1_hiera_s.yaml')")
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; use one of {KINDS}")
    if config is None:
        config = {"unsamv2": "configs/sam2.1/sam2.1_hiera_s.yaml", "sam2": "configs/sam2.1/sam2.1_hiera_s.yaml",
                  "sansa": "configs/sam2/sam2_hiera_l.yaml"}[kind]
    if kind == "sansa":
        from .models.sansa import build_sansa_model

        module = build_sansa_model(config=config, base_checkpoint=base_checkpoint, adapter_checkpoint=ckpt,
                                   device="cpu", overrides=overrides)
    else:
        module = _build(kind, config, dev, overrides)
        if ckpt is not None:
            _load_weights(kind, module, ckpt)
    module = module.to(dev).eval()
    name = spec.name if spec else (Path(ckpt).name if ckpt else f"random-{kind}")
    return LoadedModel(kind=kind, name=name, module=module, device=dev, config=str(config), checkpoint=ckpt,
                       is_demo=bool(spec and spec.bundled),
                       automatic_defaults=_recorded_automatic_defaults(ckpt) if spec and spec.bundled else {})


def _recorded_automatic_defaults(checkpoint: Path | None) -> dict:
    """The segment-everything settings a bundled model's build record (``<checkpoint>.json``) recommends."""
    record = Path(checkpoint).with_suffix(".json") if checkpoint else None
    if record is None or not record.is_file():
        return {}
    try:
        return dict(json.loads(record.read_text()).get("automatic_defaults") or {})
    except (OSError, ValueError) as err:
        log.warning("could not read %s (%s): using the standard segment-everything settings", record, err)
        return {}


# re-exported for callers that catch loading problems in one place
CheckpointError = CheckpointError

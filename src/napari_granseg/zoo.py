"""The model zoo: named models, where their weights come from, where they are cached, and loading by name.

- ``load_model("unsamv2-plus")`` finds the checkpoint in the cache (``GRANSEG_CACHE_DIR`` or the per-user
  cache dir), downloads it when missing (:mod:`.downloads`: Google Drive through gdown, SAM 2 through the
  Hugging Face hub, every payload checked before it enters the cache, its sha256 recorded and checked again
  at each later load), and builds the model (:mod:`.loading`).
- Offline, the error names the model, the URLs and the exact path to put the file by hand. Files saved under
  their upstream names (e.g. ``unsamv2_plus_ckpt.pt``) are found as they are: no renaming by hand.
- ``load_model("file.pt", kind=..., config=...)`` loads a local checkpoint; ``load_model(None, kind=...)``
  builds random weights (tests).
- With no real UnSAMv2 checkpoint present, :func:`default_model_name` falls back to the bundled demo model.
- :func:`model_status` says, without loading, whether a zoo model's file is usable ("present") or what is
  wrong with it (missing, a saved web page, changed since download).
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

from .checkpoints import CheckpointError, checkpoint_record, sniff_format
from .devices import resolve_device
from .downloads import ModelDownloadError, download_checkpoint, min_bytes, verify_recorded
from .loading import build_model
from .models.loaded import LoadedModel

__all__ = ["ModelSpec", "ZOO", "cache_dir", "checkpoint_path", "fetch_checkpoint", "load_model",
           "default_model_name", "ModelDownloadError", "list_models", "KINDS", "model_status",
           "finetuned_dir", "finetuned_models"]

log = logging.getLogger(__name__)
KINDS = ("unsamv2", "sam2", "sansa")
_META = "https://dl.fbaipublicfiles.com/segment_anything_2"


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry. ``filename`` is the name in the cache dir; ``aliases`` other names it is found under.

    Sources, tried in this order: ``hf_repo`` (file ``hf_filename`` or ``filename``), ``urls``, ``gdrive_id``.
    ``size_mb``: the file's size (published, or estimated from the parameter count: float32 weights); a
    download smaller than 40% of it is refused. ``sha256``: the publisher's hash, where one is published.
    """

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
    gdrive_id: str | None = None
    hf_filename: str | None = None


_UNSAMV2_ID, _UNSAMV2_PLUS_ID = "1iYmYFeJxY4aI1lG5F2ZFL8tzzyGkCgX0", "1M56QN2CWfou7h5azxJvc_igmbQh9D2af"
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
              gdrive_id=_UNSAMV2_ID, size_mb=186, aliases=("unsamv2.pt", "UnSAMv2.pt"),
              description=f"UnSAMv2 (SAM 2.1-S + granularity), Google Drive id {_UNSAMV2_ID}"),
    ModelSpec("unsamv2-plus", "unsamv2", "configs/sam2.1/sam2.1_hiera_s.yaml", "unsamv2_plus_ckpt.pt",
              gdrive_id=_UNSAMV2_PLUS_ID, size_mb=186, aliases=("unsamv2+.pt", "UnSAMv2+.pt"),
              description=f"UnSAMv2+ (more training data), Google Drive id {_UNSAMV2_PLUS_ID}"),
    ModelSpec("sansa-universal", "sansa", "configs/sam2/sam2_hiera_l.yaml", "sansa_universal.pth",
              ("https://github.com/ClaudiaCuttano/SANSA/releases/download/v1.0.0/sansa_universal.pth",),
              gdrive_id="1nPOdRfMfo3MQRSi1qkPEri7Gl6FCEVHe", size_mb=105, base="sam2-hiera-large",
              description="SANSA Universal adapters (any prompt, channel factor 0.8)"),
    ModelSpec("sansa-generalist", "sansa", "configs/sam2/sam2_hiera_l.yaml", "adapter_generalist.pth",
              gdrive_id="1ks88lD2exj6GhtCVEK6aatvd1Pq2BBZq", size_mb=105, base="sam2-hiera-large",
              description="SANSA generalist adapters (channel factor 0.8)"),
    ModelSpec("sansa-fss1000", "sansa", "configs/sam2/sam2_hiera_l.yaml", "adapter_fss_fold0.pth",
              gdrive_id="1Y_W3cL-qxK-J5-yCJk1fXBwNwrhod5RS", size_mb=40, base="sam2-hiera-large",
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


def finetuned_dir() -> Path:
    """Where fine-tuned models are kept (``<cache>/finetuned``): each ``<name>.pt`` is listed and loaded by name."""
    return cache_dir() / "finetuned"


def finetuned_models(kind: str = "unsamv2") -> list[str]:
    """Names of the fine-tuned models of ``kind`` in :func:`finetuned_dir` (what the widgets list after the zoo)."""
    folder = finetuned_dir()
    if kind != "unsamv2" or not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.pt") if p.stem not in ZOO and not p.name.startswith("."))


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


def fetch_checkpoint(spec: ModelSpec | str, download: bool = True, progress: bool = True) -> Path:
    """Return a local path to ``spec``'s checkpoint, downloading it if needed (and allowed).

    A file found in the cache is checked against its download record (or the published sha256) first.
    """
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
        verify_recorded(found, spec.sha256)
        return found
    target = checkpoint_path(spec)
    if not download:
        from .downloads import manual_steps

        raise ModelDownloadError(f"checkpoint for model {spec.name!r} is not in {target.parent}. "
                                 f"{manual_steps(spec, target)}")
    return download_checkpoint(spec, target, progress=progress)


def model_status(name: str) -> str:
    """One line on a zoo model's checkpoint, without loading it.

    ``"present"``, ``"missing"``, or what is wrong with the file found: ``"not a checkpoint (HTML page):
    delete <path> ..."``, ``"not a checkpoint (...)"``, ``"incomplete ..."``, ``"hash mismatch: ..."``.
    A SANSA entry whose SAM 2 base is missing says so.
    """
    spec = ZOO[name]
    path = checkpoint_path(spec) if spec.bundled else _find_existing(spec)
    if path is None or not path.is_file():
        return "missing"
    with open(path, "rb") as f:
        kind = sniff_format(f.read(4096))
    fix = f"delete {path} and download it again (load_model({spec.name!r})) or by hand"
    if kind == "html":
        return f"not a checkpoint (HTML page): {fix}"
    if kind == "unknown":
        return f"not a checkpoint (unknown format): {fix}"
    size = path.stat().st_size
    if not spec.bundled and spec.size_mb and size < min_bytes(spec):
        return f"incomplete ({size} bytes, expected about {spec.size_mb:g} MB): {fix}"
    try:
        verify_recorded(path, spec.sha256)
    except CheckpointError:
        return f"hash mismatch: {path} changed since it was downloaded; {fix}"
    if spec.base and _find_existing(ZOO[spec.base]) is None:
        return f"present (its SAM 2 base {spec.base!r} is missing)"
    return "present"


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
        if not ckpt.is_file() and (finetuned_dir() / f"{name_or_path}.pt").is_file():
            ckpt = finetuned_dir() / f"{name_or_path}.pt"  # a fine-tuned model, by the name it was saved under
        if not ckpt.is_file():
            raise FileNotFoundError(
                f"{name_or_path!r} is neither a zoo model ({', '.join(ZOO)}), a fine-tuned model in "
                f"{finetuned_dir()}, nor an existing file.")
        found = checkpoint_record(ckpt)  # written by this plugin (fine-tuning): it names kind and config
        kind, config = kind or found.get("kind"), config or found.get("config")
        if kind is None:
            raise ValueError(f"give kind= for a checkpoint file ({' | '.join(KINDS)}), e.g. "
                             f"load_model({str(name_or_path)!r}, kind='unsamv2', config='configs/sam2.1/sam2.1_hiera_s.yaml')")
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; use one of {KINDS}")
    if config is None:
        config = {"unsamv2": "configs/sam2.1/sam2.1_hiera_s.yaml", "sam2": "configs/sam2.1/sam2.1_hiera_s.yaml",
                  "sansa": "configs/sam2/sam2_hiera_l.yaml"}[kind]
    module = build_model(kind, config, ckpt, base_checkpoint=base_checkpoint, overrides=overrides)
    module = module.to(dev).eval()
    name = spec.name if spec else ((ckpt.stem if ckpt.parent == finetuned_dir() else ckpt.name) if ckpt
                                   else f"random-{kind}")
    record = checkpoint_record(ckpt) if ckpt is not None and spec is None else {}
    return LoadedModel(kind=kind, name=name, module=module, device=dev, config=str(config), checkpoint=ckpt,
                       is_demo=bool(spec and spec.bundled) or bool(record.get("is_demo")),
                       automatic_defaults=(_recorded_automatic_defaults(ckpt) if spec and spec.bundled
                                           else dict(record.get("automatic_defaults") or {})))


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
__all__ += ["CheckpointError"]

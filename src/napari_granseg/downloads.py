"""Getting checkpoint files into the cache, and only real checkpoints.

Why this module exists: the released UnSAMv2 and SANSA weights live on Google Drive, which answers large
files with an HTML "can't scan this file for viruses" page instead of the file; a plain HTTP client would
save that page under the checkpoint's name. So:

- Google Drive entries go through ``gdown`` (it follows Drive's confirmation form); SAM 2 entries through
  ``huggingface_hub`` (``facebook/sam2*`` repos) with Meta's direct URL as the second source; SANSA's GitHub
  release before Drive. Sources are tried in that order; every failure is kept for the final message.
- Each payload lands in a temporary folder next to the cache file and is checked there (first bytes must be
  a torch/safetensors file, never HTML; size at least the entry's minimum; sha256 when the publisher gives
  one) before it is moved into place. Nothing rejected ever reaches the cache under the checkpoint's name.
- The sha256 of a downloaded file is recorded in a small JSON sidecar (``<file>.download.json``, written
  atomically) and checked whenever the file is used again, so a file changed or damaged on disk is reported
  instead of silently giving other results.
- Offline (``GRANSEG_OFFLINE=1``) nothing touches the network (a SAM 2 file already in the Hugging Face cache
  is still used); online, connections give up after :data:`CONNECT_TIMEOUT` seconds.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .checkpoints import CheckpointError, sniff_format

if TYPE_CHECKING:  # pragma: no cover
    from .zoo import ModelSpec

__all__ = ["ModelDownloadError", "CONNECT_TIMEOUT", "READ_TIMEOUT", "download_checkpoint", "sources",
           "manual_steps", "check_payload", "sha256_of", "record_path", "recorded_hash", "verify_recorded",
           "gdrive_url", "hf_url", "offline"]

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5.0   # seconds to reach a server: an offline machine fails fast
READ_TIMEOUT = 60.0     # seconds without a byte before a stalled transfer is abandoned
_MIN_BYTES = 100_000    # smaller than any checkpoint; an error page is usually a few kB
_RECORD_SUFFIX = ".download.json"


class ModelDownloadError(RuntimeError):
    """A checkpoint is not in the cache and could not be downloaded; the message says where to put it."""


def offline() -> bool:
    """True when ``GRANSEG_OFFLINE=1``: no network access at all."""
    return os.environ.get("GRANSEG_OFFLINE") == "1"


def gdrive_url(file_id: str) -> str:
    """The browser link for a Google Drive file id (what a user opens to download it by hand)."""
    return f"https://drive.google.com/uc?export=download&id={file_id}"


def hf_url(repo: str, filename: str) -> str:
    """The Hugging Face resolve link of ``filename`` in model repo ``repo``."""
    return f"https://huggingface.co/{repo}/resolve/main/{filename}"


def _hf_filename(spec: "ModelSpec") -> str:
    return spec.hf_filename or spec.filename


def sources(spec: "ModelSpec") -> list[tuple[str, Callable[[Path, bool], Path]]]:
    """``[(label, fetch)]`` in the order they are tried; ``fetch(folder, progress)`` returns the new file."""
    out: list[tuple[str, Callable[[Path, bool], Path]]] = []
    if spec.hf_repo:
        out.append((f"Hugging Face {spec.hf_repo}/{_hf_filename(spec)}",
                    lambda folder, progress: _fetch_hf(spec.hf_repo, _hf_filename(spec), folder, progress)))
    for url in spec.urls:
        out.append((url, lambda folder, progress, url=url: _fetch_url(url, folder / spec.filename, progress)))
    if spec.gdrive_id:
        out.append((f"Google Drive {gdrive_url(spec.gdrive_id)}",
                    lambda folder, progress: _fetch_gdrive(spec.gdrive_id, folder / spec.filename, progress)))
    return out


def manual_steps(spec: "ModelSpec", target: Path) -> str:
    """How to get the file by hand: where from, which name, which folder."""
    links = [hf_url(spec.hf_repo, _hf_filename(spec))] if spec.hf_repo else []
    links += list(spec.urls) + ([gdrive_url(spec.gdrive_id)] if spec.gdrive_id else [])
    where = " or ".join(links) if links else "its publisher"
    return (f"To install it by hand: download {where} in a browser (on Google Drive, confirm 'Download "
            f"anyway') and put it at {target} (file name {target.name!r}; or set GRANSEG_CACHE_DIR to the "
            f"folder holding it), or pass the file path to load_model(path, kind={spec.kind!r}).")


def min_bytes(spec: "ModelSpec") -> int:
    """The smallest payload accepted: 40% of the entry's size (some sizes are estimated from parameter
    counts), or 100 kB when no size is known."""
    return int(spec.size_mb * 1e6 * 0.4) if spec.size_mb else _MIN_BYTES


def check_payload(path: Path, spec: "ModelSpec", source: str) -> str:
    """Raise ``ValueError`` unless ``path`` looks like ``spec``'s checkpoint; return its sha256."""
    with open(path, "rb") as f:
        head = f.read(4096)
    kind = sniff_format(head)
    size = path.stat().st_size
    if kind == "html":
        raise ValueError(f"{source} returned a web page (HTML, {size} bytes), not the checkpoint (an error, "
                         f"sign-in or confirmation page)")
    if kind == "unknown":
        raise ValueError(f"{source} returned {size} bytes that are not a checkpoint (first bytes {head[:16]!r})")
    if size < min_bytes(spec):
        raise ValueError(f"{source} returned only {size} bytes; the checkpoint is about "
                         f"{spec.size_mb or min_bytes(spec) / 1e6:g} MB (an interrupted or refused download)")
    digest = sha256_of(path)
    if spec.sha256 and digest != spec.sha256:
        raise ValueError(f"{source} returned a file whose sha256 {digest} is not the published {spec.sha256}")
    return digest


def download_checkpoint(spec: "ModelSpec", target: Path, progress: bool = True) -> Path:
    """Download ``spec``'s checkpoint to ``target`` from the first source that gives a valid file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    candidates = sources(spec)
    if offline():
        candidates = [(label, fetch) for label, fetch in candidates if label.startswith("Hugging Face")]
    errors = []
    for label, fetch in candidates:
        with tempfile.TemporaryDirectory(prefix=f".{spec.filename}.", dir=target.parent) as folder:
            try:
                got = fetch(Path(folder), progress)
                digest = check_payload(got, spec, label)
            except Exception as err:  # network errors, HTTP errors, rejected payloads: try the next source
                log.warning("download of %s from %s failed: %s", spec.name, label, err)
                errors.append(f"{label}: {type(err).__name__}: {err}")
                continue
            os.replace(got, target)  # same folder, so the file appears whole or not at all
        _write_record(target, digest, label)
        return target
    reason = "offline (GRANSEG_OFFLINE=1)" if offline() and not errors else "; ".join(errors)[:900] or "no source"
    raise ModelDownloadError(f"could not download model {spec.name!r} ({reason}). {manual_steps(spec, target)}")


def _fetch_url(url: str, output: Path, progress: bool) -> Path:
    import pooch

    downloader = pooch.HTTPDownloader(progressbar=progress and _has_tqdm(), timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
    downloader(url, str(output), None)
    return output


def _fetch_gdrive(file_id: str, output: Path, progress: bool) -> Path:
    import gdown

    # use_cookies=False: nothing is written to the user's ~/.cache/gdown
    result = gdown.download(id=file_id, output=str(output), quiet=not progress, use_cookies=False,
                            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
    if not result:
        raise ModelDownloadError(f"gdown gave no file for Google Drive id {file_id}")
    return Path(result)


def _fetch_hf(repo: str, filename: str, folder: Path, progress: bool) -> Path:
    """A file already in the Hugging Face cache is copied (never moved); otherwise downloaded into ``folder``."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo, filename)
    if isinstance(cached, str) and Path(cached).is_file():
        copy = folder / filename
        shutil.copyfile(cached, copy)
        return copy
    if offline():
        raise ModelDownloadError("not in the Hugging Face cache and GRANSEG_OFFLINE=1")
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now, not at import, so it can be set at run time
    return Path(hf_hub_download(repo, filename, local_dir=folder, endpoint=endpoint, etag_timeout=CONNECT_TIMEOUT))


def _has_tqdm() -> bool:
    try:
        import tqdm  # noqa: F401

        return True
    except ImportError:  # pragma: no cover
        return False


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, read in 4 MB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def record_path(checkpoint: Path) -> Path:
    """The JSON sidecar holding the sha256 recorded when ``checkpoint`` was downloaded."""
    return checkpoint.with_name(checkpoint.name + _RECORD_SUFFIX)


def _write_record(checkpoint: Path, digest: str, source: str) -> None:
    from .io import atomic_path

    record = {"file": checkpoint.name, "sha256": digest, "size": checkpoint.stat().st_size, "source": source,
              "downloaded_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    with atomic_path(record_path(checkpoint)) as tmp:
        tmp.write_text(json.dumps(record, indent=1))


def recorded_hash(checkpoint: Path) -> dict | None:
    """The download record of ``checkpoint`` (sha256, size, source), or None when there is none."""
    path = record_path(checkpoint)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        return record if isinstance(record, dict) and "sha256" in record else None
    except (OSError, ValueError):
        return None


def verify_recorded(checkpoint: Path, expected_sha256: str | None = None) -> None:
    """Raise :class:`CheckpointError` when ``checkpoint`` differs from its download record (or the
    published sha256): the file changed or was damaged since it was downloaded."""
    record = recorded_hash(checkpoint)
    want = (record or {}).get("sha256") or expected_sha256
    if not want:
        return
    size = checkpoint.stat().st_size
    if record and record.get("size") not in (None, size):
        got = f"{size} bytes instead of {record['size']}"
    else:
        digest = sha256_of(checkpoint)
        if digest == want:
            return
        got = f"sha256 {digest} instead of {want}"
    raise CheckpointError(
        f"hash mismatch: checkpoint {checkpoint} has changed or is corrupt since it was downloaded ({got}). "
        f"Delete {checkpoint} and {record_path(checkpoint).name if record else 'the file'} and download it "
        f"again (napari_granseg.load_model(<zoo name>) does this).")

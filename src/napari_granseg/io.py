"""Reading images and writing results safely.

Atomic writes (write to a temporary file in the same folder, fsync, then ``os.replace``) so an interrupted
run never leaves a half-written checkpoint, cache entry or label image behind.

Readers/writers for batch runs (napari-free): :func:`read_image` (TIFF, PNG, JPEG, ...), :func:`open_stack`
(a lazy dask array over a TIFF stack or a zarr array, read one slice at a time, so a stack larger than
memory streams through), :func:`write_labels_tiff` (atomic, zlib-compressed, with JSON metadata used to
resume runs), and :class:`LabelsZarr` (a chunked zarr output, one chunk per slice plus a per-slice "done"
flag written after the slice, so a rerun knows exactly which slices are finished).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["atomic_path", "atomic_write_bytes", "IMAGE_SUFFIXES", "is_image_file", "read_image", "open_stack",
           "stack_shape", "write_labels_tiff", "read_labels_metadata", "labels_output_path", "LabelsZarr",
           "UnreadableImageError", "ForeignStoreError"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or (path.suffix + ".part"),
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


# ------------------------------------------------------------------------------------------------ reading
#: File suffixes treated as images when a folder is expanded (case-insensitive).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
#: Outputs of this plugin, never taken as inputs when a folder is expanded.
LABELS_SUFFIX = "_labels"


class UnreadableImageError(OSError):
    """An input file that cannot be read as an image (corrupt, truncated, unknown format)."""


def is_image_file(path: str | os.PathLike) -> bool:
    """An image file by suffix, excluding this plugin's own ``*_labels.*`` outputs and hidden/temp files."""
    p = Path(path)
    return (p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith(LABELS_SUFFIX)
            and not p.name.startswith("."))


def _is_zarr(path: Path) -> bool:
    return path.suffix.lower() == ".zarr" or (path.is_dir() and ((path / "zarr.json").exists()
                                                                   or (path / ".zarray").exists()))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one image file into memory: tifffile for TIFF, imageio (else scikit-image) for PNG/JPEG/...

    Raises :class:`UnreadableImageError` naming the file for anything that cannot be decoded, so a batch run
    can report it and go on.
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableImageError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            image = np.asarray(tifffile.imread(path))
        else:
            try:
                import imageio.v3 as iio

                image = np.asarray(iio.imread(path))
            except ImportError:  # pragma: no cover - imageio is a dependency of scikit-image
                from skimage import io as skio

                image = np.asarray(skio.imread(path))
    except Exception as err:
        raise UnreadableImageError(f"{path}: cannot read image ({type(err).__name__}: {err})") from err
    if image.size == 0 or image.ndim < 2:
        raise UnreadableImageError(f"{path}: cannot read image (no pixel data: the file is empty, truncated or "
                                   f"not an image)")
    return image


def _open_zarr_array(path: str | os.PathLike):
    """The zarr array behind ``path``: a TIFF (through tifffile's zarr store) or a zarr array/group."""
    import zarr

    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        store = tifffile.imread(path, aszarr=True)
        z = zarr.open(store, mode="r")
    else:
        z = zarr.open(str(path), mode="r")
    if not hasattr(z, "shape"):  # a group: take its first array (e.g. OME-zarr level 0 or our 'labels')
        arrays = dict(z.arrays())
        if not arrays:
            raise UnreadableImageError(f"{path}: zarr group without arrays")
        preferred = [n for n in ("labels", "0", "image", "data") if n in arrays]
        z = arrays[preferred[0]] if preferred else max(arrays.values(), key=lambda a: (len(a.shape), a.size))
    return z


def open_stack(path: str | os.PathLike):
    """A lazy dask array over a multi-page TIFF or a zarr store, chunked one slice at a time.

    Nothing is read until a slice is computed (``stack[i].compute()``), so stacks larger than memory work.
    """
    import dask.array as da

    try:
        z = _open_zarr_array(path)
    except UnreadableImageError:
        raise
    except Exception as err:
        raise UnreadableImageError(f"{path}: cannot open as a stack ({type(err).__name__}: {err})") from err
    chunks = (1,) + tuple(z.shape[1:]) if len(z.shape) >= 3 else z.shape
    return da.from_zarr(z, chunks=chunks)


def stack_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """The array shape of a TIFF/zarr file without reading its pixels."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return tuple(tif.series[0].shape)
    return tuple(_open_zarr_array(path).shape)


# ------------------------------------------------------------------------------------------------ writing
def labels_output_path(image_path: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                       root: str | os.PathLike | None = None) -> Path:
    """``<stem>_labels.tif`` next to the image, or in ``out_dir`` (keeping the sub-folder under ``root``)."""
    p = Path(image_path)
    name = f"{p.stem}{LABELS_SUFFIX}.tif"
    if out_dir is None:
        return p.with_name(name)
    sub = Path()
    if root is not None:
        try:
            sub = p.parent.relative_to(root)
        except ValueError:
            sub = Path()
    return Path(out_dir) / sub / name


def _label_dtype(labels: np.ndarray) -> np.dtype:
    top = int(labels.max()) if labels.size else 0
    return np.dtype(np.uint16) if 0 <= top < 65536 and (labels.size == 0 or labels.min() >= 0) else np.dtype(np.int32)


def write_labels_tiff(path: str | os.PathLike, labels: np.ndarray, metadata: dict[str, Any] | None = None) -> Path:
    """Write a label image atomically (zlib-compressed TIFF; uint16 when ids fit, else int32).

    ``metadata`` (JSON-able) is stored in the TIFF description; :func:`read_labels_metadata` reads it back
    (batch runs keep a fingerprint of the job there to know whether an output is already finished).
    """
    import tifffile

    labels = np.asarray(labels)
    data = labels.astype(_label_dtype(labels), copy=False)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, data, compression="zlib", metadata=dict(metadata or {}))
    return Path(path)


def read_labels_metadata(path: str | os.PathLike) -> dict[str, Any] | None:
    """The metadata dict :func:`write_labels_tiff` stored, or None when absent or unreadable."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            meta = tif.shaped_metadata
            return dict(meta[0]) if meta else None
    except Exception:
        return None


#: Entries a :class:`LabelsZarr` store may hold (zarr v2 and v3 metadata, our two arrays).
_STORE_ENTRIES = {"zarr.json", ".zgroup", ".zattrs", ".zmetadata", "labels", "done"}


class ForeignStoreError(FileExistsError):
    """An output path holds something this tool did not write; it is never deleted or changed."""


class LabelsZarr:
    """A zarr group holding ``labels`` (N, H, W) chunked one slice per chunk, and ``done`` (N,) flags.

    Each slice is written as one whole chunk (one file), then its ``done`` flag (its own chunk), so a slice is
    finished iff its flag is set: an interrupted run leaves at most one slice to redo, never a flag on a
    half-written slice. Slices are independent files, so many workers can write at once without locks.

    ``attrs['granseg']`` marks the store as ours and keeps the job: only such a store is reopened (same job)
    or replaced (``overwrite=True``, another job). Any other existing path (a folder of the user's files, a
    zarr written by another tool, a file) is refused with :class:`ForeignStoreError` and left untouched,
    whatever ``overwrite`` says; an existing empty folder is used.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int], job: dict[str, Any] | None = None,
                 dtype: str = "int32", overwrite: bool = False):
        import zarr

        self.path = Path(path)
        shape = tuple(int(s) for s in shape)
        job = dict(job or {})
        reuse = False
        if self.path.exists() or self.path.is_symlink():
            marker = self._marker()
            if marker is None:
                if not (self.path.is_dir() and not self.path.is_symlink() and not any(self.path.iterdir())):
                    raise ForeignStoreError(
                        f"{self.path} already exists and is not a labels store written by granseg (no granseg "
                        f"marker), so it is left untouched (nothing deleted); choose a new output path "
                        f"(--zarr NEW.zarr), or move that folder away yourself if you are sure it is not needed.")
            else:
                extra = sorted(p.name for p in self.path.iterdir() if p.name not in _STORE_ENTRIES)
                group = zarr.open_group(str(self.path), mode="r+")
                old_shape = tuple(group["labels"].shape) if "labels" in group else None
                if old_shape == shape and dict(marker.get("job", {})) == job:
                    reuse = True
                elif not overwrite:
                    raise FileExistsError(
                        f"{self.path} holds results of another run (shape {old_shape}, job {marker.get('job')}); "
                        f"pass overwrite=True (CLI: --overwrite) to replace it, or choose another output path.")
                elif extra:
                    raise ForeignStoreError(
                        f"{self.path} is a granseg store but also holds files granseg did not write ({extra[:5]}), "
                        f"so it is not replaced; move those files out, or choose another output path.")
        if reuse:
            self.group = group
        else:
            group = zarr.open_group(str(self.path), mode="w")
            group.create_array("labels", shape=shape, chunks=(1,) + shape[1:], dtype=dtype, fill_value=0)
            group.create_array("done", shape=(shape[0],), chunks=(1,), dtype="uint8", fill_value=0)
            group.attrs["granseg"] = {"store": "labels", "version": 1, "job": job}
            self.group = group
        self.shape = shape

    def _marker(self) -> dict[str, Any] | None:
        """The ``granseg`` attribute of the zarr group at ``self.path``, None when it is not our store."""
        if not self.path.is_dir() or self.path.is_symlink():
            return None
        try:
            import zarr

            marker = zarr.open_group(str(self.path), mode="r").attrs.get("granseg")
        except Exception:
            return None
        return dict(marker) if isinstance(marker, dict) and marker.get("store") == "labels" else None

    @classmethod
    def open(cls, path: str | os.PathLike) -> "LabelsZarr":
        """Reopen an existing store for writing (e.g. in a worker), without any checks."""
        import zarr

        self = cls.__new__(cls)
        self.path = Path(path)
        self.group = zarr.open_group(str(self.path), mode="r+")
        self.shape = tuple(self.group["labels"].shape)
        return self

    @property
    def labels(self):
        return self.group["labels"]

    def is_done(self, index: int) -> bool:
        try:
            return bool(self.group["done"][index])
        except Exception:  # a flag chunk cut short by a crash: treat the slice as not done
            return False

    def done_indices(self) -> list[int]:
        try:
            flags = np.asarray(self.group["done"][:])
        except Exception:
            return [i for i in range(self.shape[0]) if self.is_done(i)]
        return [int(i) for i in np.flatnonzero(flags)]

    def write(self, index: int, labels: np.ndarray) -> None:
        """Write slice ``index`` (one chunk), then mark it done."""
        labels = np.asarray(labels)
        if labels.shape != self.shape[1:]:
            raise ValueError(f"slice {index}: labels of shape {labels.shape}, store expects {self.shape[1:]}")
        self.group["labels"][index] = labels.astype(self.group["labels"].dtype, copy=False)
        self.group["done"][index] = 1

"""Dataset readers for what users have: image + label-image folders, COCO JSON, and the interactive benchmarks.

Every reader yields :class:`Sample` (image, list of instance masks, id, optional ignore mask and classes), so
the evaluations never care where the data came from. Layouts:

- ``folder``: ``images/`` + ``labels/`` (or explicit folders); label images (TIFF/PNG) hold instance ids,
  0 = background, each other id one object (its id is also its class for the few-shot evaluation). Label files
  match images by file stem (``a.png`` <-> ``a.tif``, also ``a_label``, ``a_labels``, ``a_mask``, ``a_masks``,
  ``a_gt``).
- ``coco``: a COCO instances JSON (polygons or RLE, via pycocotools); crowd annotations are skipped.
- ``grabcut`` / ``berkeley``: ``images/`` + ``masks/`` (GrabCut also ``data_GT/`` + ``boundary_GT/``); mask
  values > 128 = object, 128 = unknown (ignored), one object per image (as isegm reads them).
- ``davis``: ``img/`` + ``gt/``; any non-zero value = the object, one object per image.

Images: tifffile for .tif/.tiff, imageio otherwise; label images: tifffile or PIL (palette PNGs keep indices).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["Sample", "read_image", "read_label", "read_dataset", "read_folder", "read_coco", "read_benchmark",
           "FORMATS", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LABEL_STEM_SUFFIXES = ("", "_label", "_labels", "_mask", "_masks", "_gt")
FORMATS = ("folder", "coco", "grabcut", "berkeley", "davis")


@dataclass
class Sample:
    """One image with its objects. ``masks``: list of (H, W) bool; ``ignore``: (H, W) bool or None (pixels that
    count neither as object nor background); ``classes``: one class per mask (None: all one class)."""

    image: np.ndarray
    masks: list[np.ndarray]
    id: str
    ignore: np.ndarray | None = None
    classes: list | None = None


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in (".tif", ".tiff")


def read_image(path: str | Path) -> np.ndarray:
    """Pixels of an image file; an alpha channel is dropped."""
    path = Path(path)
    if _is_tiff(path):
        import tifffile

        arr = tifffile.imread(path)
    else:
        import imageio.v3 as iio

        arr = np.asarray(iio.imread(path))
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise ValueError(f"{path}: expected a 2D image (HxW or HxWx3), got shape {arr.shape}; "
                         "save one 2D plane per file for evaluation")
    return arr


def read_label(path: str | Path) -> np.ndarray:
    """Integer label image (palette PNGs keep their indices; RGB label images become one id per colour)."""
    path = Path(path)
    if _is_tiff(path):
        import tifffile

        arr = np.asarray(tifffile.imread(path))
    else:
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr[..., :3].astype(np.int64)
        arr = (arr[..., 0] << 16) | (arr[..., 1] << 8) | arr[..., 2]
    if arr.ndim != 2:
        raise ValueError(f"{path}: a label image must be 2D, got shape {arr.shape}")
    return arr


def _list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} does not exist")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _match_by_stem(images: list[Path], labels: list[Path]) -> list[tuple[Path, Path]]:
    by_stem: dict[str, Path] = {}
    for lab in labels:
        by_stem.setdefault(lab.stem, lab)
    pairs = []
    for img in images:
        for suffix in LABEL_STEM_SUFFIXES:
            lab = by_stem.get(img.stem + suffix)
            if lab is not None and lab != img:
                pairs.append((img, lab))
                break
    return pairs


def _pick_dir(root: Path | None, names: tuple[str, ...], what: str) -> Path:
    if root is None:
        raise ValueError(f"give the dataset folder or the {what} folder")
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    for n in names:
        if (root / n).is_dir():
            return root / n
    raise FileNotFoundError(f"{root}: no {what} folder; expected one of {', '.join(n + '/' for n in names)}")


def read_folder(root: str | Path | None = None, images_dir: str | Path | None = None,
                labels_dir: str | Path | None = None, limit: int | None = None) -> Iterator[Sample]:
    """Images + instance label images matched by stem (``root/images`` + ``root/labels`` unless given)."""
    root = Path(root) if root is not None else None
    img_dir = Path(images_dir) if images_dir else _pick_dir(root, ("images", "imgs", "img"), "images")
    lab_dir = Path(labels_dir) if labels_dir else _pick_dir(root, ("labels", "masks", "gt"), "labels")
    pairs = _match_by_stem(_list_images(img_dir), _list_images(lab_dir))
    if not pairs:
        raise FileNotFoundError(f"no image in {img_dir} has a label image with the same file stem in {lab_dir}")
    for img_path, lab_path in pairs[:limit]:
        image = read_image(img_path)
        label = read_label(lab_path)
        if label.shape != image.shape[:2]:
            raise ValueError(f"{lab_path}: label shape {label.shape} differs from image shape {image.shape[:2]}")
        ids = [int(v) for v in np.unique(label) if v != 0]
        yield Sample(image, [label == v for v in ids], img_path.stem, None, ids)


def read_coco(annotation_file: str | Path, images_dir: str | Path | None = None,
              limit: int | None = None) -> Iterator[Sample]:
    """COCO instances JSON; images from ``images_dir`` (default: beside the JSON, or its ``images/`` folder)."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    ann_path = Path(annotation_file)
    if ann_path.is_dir():
        found = sorted(ann_path.glob("*.json")) + sorted(ann_path.glob("annotations/*.json"))
        if len(found) != 1:
            raise FileNotFoundError(f"{ann_path}: give the COCO JSON file itself (found {len(found)} .json files)")
        ann_path = found[0]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ann_path))
    roots = [Path(images_dir)] if images_dir else [ann_path.parent, ann_path.parent / "images",
                                                    ann_path.parent.parent / "images"]
    for img_id in sorted(coco.getImgIds())[:limit]:
        info = coco.loadImgs(img_id)[0]
        path = next((r / info["file_name"] for r in roots if (r / info["file_name"]).is_file()), None)
        if path is None:
            path = next((r / Path(info["file_name"]).name for r in roots
                         if (r / Path(info["file_name"]).name).is_file()), None)
        if path is None:
            raise FileNotFoundError(f"image {info['file_name']!r} not found in {', '.join(map(str, roots))}; "
                                    "pass the images folder (--images)")
        image = read_image(path)
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=False)) if not a.get("iscrowd")]
        masks = [coco.annToMask(a).astype(bool) for a in anns]
        keep = [i for i, m in enumerate(masks) if m.any()]
        yield Sample(image, [masks[i] for i in keep], Path(info["file_name"]).stem, None,
                     [anns[i]["category_id"] for i in keep])


_BENCHMARK_DIRS = {
    "grabcut": (("images", "data_GT"), ("masks", "boundary_GT")),
    "berkeley": (("images",), ("masks",)),
    "davis": (("img", "images"), ("gt", "masks")),
}


def read_benchmark(root: str | Path, fmt: str, limit: int | None = None) -> Iterator[Sample]:
    """GrabCut / Berkeley / DAVIS as isegm lays them out: one object per image."""
    fmt = fmt.lower()
    if fmt not in _BENCHMARK_DIRS:
        raise ValueError(f"unknown benchmark layout {fmt!r}; choose one of {sorted(_BENCHMARK_DIRS)}")
    root = Path(root)
    img_names, mask_names = _BENCHMARK_DIRS[fmt]
    img_dir = _pick_dir(root, img_names, "images")
    mask_dir = _pick_dir(root, mask_names, "masks")
    pairs = _match_by_stem(_list_images(img_dir), _list_images(mask_dir))
    if not pairs:
        raise FileNotFoundError(f"no image in {img_dir} has a mask with the same file stem in {mask_dir}")
    for img_path, mask_path in pairs[:limit]:
        image = read_image(img_path)
        raw = _read_raw_mask(mask_path)
        if fmt == "davis":
            obj, ignore = raw > 0, None
        else:
            obj, ignore = raw > 128, raw == 128
            ignore = ignore if ignore.any() else None
        yield Sample(image, [obj] if obj.any() else [], img_path.stem, ignore, [1] if obj.any() else [])


def _read_raw_mask(path: Path) -> np.ndarray:
    """A benchmark mask as one channel: the max over colour channels (isegm reads them with cv2 likewise)."""
    if _is_tiff(path):
        import tifffile

        arr = np.asarray(tifffile.imread(path))
    else:
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=-1)
    return arr.astype(np.int64)


def read_dataset(path: str | Path, fmt: str = "folder", images_dir: str | Path | None = None,
                 labels_dir: str | Path | None = None, limit: int | None = None) -> Iterator[Sample]:
    """Samples of a dataset in one of :data:`FORMATS` (see the module docstring for the layouts)."""
    fmt = fmt.lower()
    if fmt == "folder":
        return read_folder(path, images_dir, labels_dir, limit)
    if fmt == "coco":
        return read_coco(path, images_dir, limit)
    if fmt in _BENCHMARK_DIRS:
        return read_benchmark(path, fmt, limit)
    raise ValueError(f"unknown dataset format {fmt!r}; choose one of {', '.join(FORMATS)}")

import json

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from PIL import Image
from pycocotools import mask as mask_utils

from granseg_training.evaluation.readers import read_dataset


def _rgb(h=12, w=16, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_folder_tiff_images_png_labels_matched_by_stem(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    img = np.arange(12 * 16, dtype=np.uint16).reshape(12, 16)
    tifffile.imwrite(tmp_path / "images" / "cell_a.tif", img)
    tifffile.imwrite(tmp_path / "images" / "no_label.tif", img)  # no label image: skipped
    lab = np.zeros((12, 16), np.uint16)
    lab[1:4, 1:4] = 3
    lab[6:10, 8:12] = 7
    iio.imwrite(tmp_path / "labels" / "cell_a_label.png", lab)
    samples = list(read_dataset(tmp_path, "folder"))
    assert [s.id for s in samples] == ["cell_a"]
    s = samples[0]
    np.testing.assert_array_equal(s.image, img)
    assert s.classes == [3, 7]
    assert [int(m.sum()) for m in s.masks] == [9, 16]
    assert s.masks[1][6, 8] and not s.masks[1][1, 1]


def test_folder_tiff_labels_and_explicit_folders(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "seg").mkdir()
    iio.imwrite(tmp_path / "raw" / "x.png", _rgb())
    lab = np.zeros((12, 16), np.int32)
    lab[2:5, 2:5] = 70000  # ids beyond 16 bit survive in TIFF
    tifffile.imwrite(tmp_path / "seg" / "x.tiff", lab)
    (s,) = read_dataset(None, "folder", images_dir=tmp_path / "raw", labels_dir=tmp_path / "seg")
    assert s.image.shape == (12, 16, 3) and s.classes == [70000] and s.masks[0].sum() == 9


def test_folder_without_matches_says_what_is_wrong(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    iio.imwrite(tmp_path / "images" / "a.png", _rgb())
    iio.imwrite(tmp_path / "labels" / "b.png", np.zeros((12, 16), np.uint8))
    with pytest.raises(FileNotFoundError, match="same file stem"):
        list(read_dataset(tmp_path, "folder"))
    with pytest.raises(ValueError, match="choose one of"):
        read_dataset(tmp_path, "voc")


def test_coco_polygons_and_rle(tmp_path):
    (tmp_path / "images").mkdir()
    iio.imwrite(tmp_path / "images" / "im1.jpg", _rgb(20, 30))
    rle_mask = np.zeros((20, 30), np.uint8)
    rle_mask[10:15, 20:28] = 1
    rle = mask_utils.encode(np.asfortranarray(rle_mask))
    rle["counts"] = rle["counts"].decode()
    data = {
        "images": [{"id": 5, "file_name": "im1.jpg", "height": 20, "width": 30}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 1, "iscrowd": 0, "area": 16, "bbox": [2, 2, 4, 4],
             "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]]},
            {"id": 2, "image_id": 5, "category_id": 2, "iscrowd": 0, "area": 40, "bbox": [20, 10, 8, 5],
             "segmentation": rle},
            {"id": 3, "image_id": 5, "category_id": 2, "iscrowd": 1, "area": 40, "bbox": [20, 10, 8, 5],
             "segmentation": rle},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    (s,) = read_dataset(tmp_path / "ann.json", "coco")
    assert s.id == "im1" and s.image.shape == (20, 30, 3)
    assert s.classes == [1, 2]  # the crowd annotation is skipped
    assert s.masks[0][3:6, 3:6].all() and not s.masks[0][10, 10]
    np.testing.assert_array_equal(s.masks[1], rle_mask.astype(bool))


def _mask_png(path, arr, palette=False):
    im = Image.fromarray(arr.astype(np.uint8))
    if palette:
        im = im.convert("P")
    im.save(path)


@pytest.mark.parametrize("fmt,img_dir,mask_dir,ext", [("grabcut", "images", "masks", ".bmp"),
                                                       ("grabcut", "data_GT", "boundary_GT", ".jpg"),
                                                       ("berkeley", "images", "masks", ".jpg")])
def test_grabcut_and_berkeley(tmp_path, fmt, img_dir, mask_dir, ext):
    (tmp_path / img_dir).mkdir()
    (tmp_path / mask_dir).mkdir()
    Image.fromarray(_rgb()).save(tmp_path / img_dir / f"flower{ext}")
    m = np.zeros((12, 16), np.uint8)
    m[2:8, 2:8] = 255
    m[8, 2:8] = 128  # unknown band -> ignore
    _mask_png(tmp_path / mask_dir / "flower.png", np.stack([m] * 3, -1))
    (s,) = read_dataset(tmp_path, fmt)
    assert s.id == "flower" and s.image.shape == (12, 16, 3)
    assert len(s.masks) == 1 and s.masks[0].sum() == 36
    assert s.ignore is not None and s.ignore.sum() == 6 and not (s.ignore & s.masks[0]).any()


def test_davis_palette_masks(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    iio.imwrite(tmp_path / "img" / "00001.jpg", _rgb())
    m = np.zeros((12, 16), np.uint8)
    m[3:6, 4:9] = 1
    im = Image.fromarray(m, mode="L").convert("P")
    im.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
    im.save(tmp_path / "gt" / "00001.png")
    (s,) = read_dataset(tmp_path, "davis")
    assert s.masks[0].sum() == 15 and s.ignore is None

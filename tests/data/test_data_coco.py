from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from data_helpers import make_exif_rotated, save_rgb, shared, write_coco
from detector.data.coco import CocoDetection, detection_collate
from detector.data.transforms import build_transforms

# Category ids deliberately unsorted and non-contiguous: labels must follow sorted ids 3, 7, 12.
CATEGORIES = [{"id": 12, "name": "zebra"}, {"id": 3, "name": "ant"}, {"id": 7, "name": "moose"}]


def make_images(root: Path, names: list[str], size: tuple[int, int] = (40, 50)) -> list[dict]:
    root.mkdir(parents=True, exist_ok=True)
    h, w = size
    images = []
    for i, name in enumerate(names, start=1):
        save_rgb(root / name, np.full((h, w, 3), 30 * i, np.uint8))
        images.append({"id": i, "file_name": name, "width": w, "height": h})
    return images


@pytest.fixture()
def small(tmp_path: Path) -> tuple[Path, Path]:
    images = make_images(tmp_path / "img", ["a.png", "b.png", "c.png"])
    anns = [
        {"id": 1, "image_id": 1, "category_id": 12, "bbox": [5, 6, 10, 8], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [-10, 5, 30, 20], "iscrowd": 0},  # clipped at x=0
        {"id": 3, "image_id": 1, "category_id": 7, "bbox": [0, 0, 50, 40], "iscrowd": 1},  # crowd
        {"id": 4, "image_id": 2, "category_id": 7, "bbox": [40, 30, 30, 30], "iscrowd": 0},  # clipped to 50x40
        # image 3 has no boxes at all: kept as a negative
    ]
    return tmp_path / "img", write_coco(tmp_path / "ann.json", images, anns, CATEGORIES)


def test_labels_are_contiguous_by_sorted_category_id(small: tuple[Path, Path]) -> None:
    ds = CocoDetection(*small)
    assert ds.label_map.category_ids == (3, 7, 12)
    assert ds.label_map.names == ("ant", "moose", "zebra")
    assert ds.label_map.num_classes == 4
    _, target = ds[0]
    assert target["labels"].dtype == torch.int64
    assert target["labels"].tolist() == [3, 1]  # category 12 -> label 3, category 3 -> label 1


def test_targets_clip_drop_crowd_and_keep_negatives(small: tuple[Path, Path]) -> None:
    ds = CocoDetection(*small)
    assert len(ds) == 3
    image, t0 = ds[0]
    assert image.shape == (3, 40, 50) and image.dtype == torch.float32
    # Box 1: [5, 6, 10, 8] xywh -> xyxy [5, 6, 15, 14]; box 2: [-10, 5, 30, 20] -> [0, 5, 20, 25].
    assert t0["boxes"].tolist() == [[5, 6, 15, 14], [0, 5, 20, 25]]
    assert t0["orig_size"] == (40, 50) and t0["image_id"] == 1 and t0["file_name"] == "a.png"
    _, t1 = ds[1]
    assert t1["boxes"].tolist() == [[40, 30, 50, 40]]
    _, t2 = ds[2]
    assert t2["boxes"].shape == (0, 4) and t2["labels"].shape == (0,)
    assert ds.stats.crowd == 1 and ds.stats.clipped == 2 and ds.stats.boxes == 3


def test_eval_transform_scales_boxes(small: tuple[Path, Path]) -> None:
    ds = CocoDetection(*small, transform=build_transforms("ssd", 32, train=False))
    image, target = ds[0]
    assert image.shape == (3, 32, 32)
    # x scales by 32 / 50, y by 32 / 40.
    expected = [[5 * 0.64, 6 * 0.8, 15 * 0.64, 14 * 0.8], [0, 5 * 0.8, 20 * 0.64, 25 * 0.8]]
    assert torch.allclose(target["boxes"], torch.tensor(expected), atol=1e-4)
    assert target["orig_size"] == (40, 50)
    _, empty = ds[2]
    assert empty["boxes"].shape == (0, 4)


def test_degenerate_boxes_dropped_counted_and_named_once(tmp_path: Path) -> None:
    images = make_images(tmp_path / "img", ["a.png"])
    anns = [
        {"id": 10, "image_id": 1, "category_id": 3, "bbox": [5, 5, 0, 10], "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 3, "bbox": [5, 5, 10, 0], "iscrowd": 0},
        {"id": 12, "image_id": 1, "category_id": 3, "bbox": [5, 5, -4, 10], "iscrowd": 0},
        {"id": 13, "image_id": 1, "category_id": 3, "bbox": [float("nan"), 5, 4, 10], "iscrowd": 0},
        {"id": 14, "image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "iscrowd": 0},
        {"id": 15, "image_id": 1, "category_id": 3, "bbox": [60, 50, 5, 5], "iscrowd": 0},  # outside 50x40
    ]
    path = tmp_path / "ann.json"
    # json.dumps writes NaN, which Python's json (and pycocotools) read back.
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    with pytest.warns(UserWarning) as record:
        ds = CocoDetection(tmp_path / "img", path)
    messages = [str(w.message) for w in record]
    invalid = [m for m in messages if "zero or negative size or NaN" in m]
    assert len(invalid) == 1 and "10, 11, 12, 13" in invalid[0]
    assert any("outside" in m and "15" in m for m in messages)
    assert ds.stats.dropped_invalid == [10, 11, 12, 13] and ds.stats.dropped_outside == [15]
    _, target = ds[0]
    assert target["boxes"].tolist() == [[1, 2, 4, 6]]
    assert all(math.isfinite(v) for v in target["boxes"].flatten().tolist())


def test_unknown_category_names_the_annotation(tmp_path: Path) -> None:
    images = make_images(tmp_path / "img", ["a.png"])
    anns = [{"id": 4242, "image_id": 1, "category_id": 99, "bbox": [1, 1, 5, 5], "iscrowd": 0}]
    path = write_coco(tmp_path / "ann.json", images, anns, CATEGORIES)
    with pytest.raises(ValueError, match=r"annotation id\(s\) 4242"):
        CocoDetection(tmp_path / "img", path)


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    with pytest.raises(ValueError, match="broken.json.*not valid JSON"):
        CocoDetection(tmp_path, path)


def test_missing_images_listed_when_built(tmp_path: Path) -> None:
    images = make_images(tmp_path / "img", ["a.png", "b.png", "c.png"])
    (tmp_path / "img" / "b.png").unlink()
    (tmp_path / "img" / "c.png").unlink()
    path = write_coco(tmp_path / "ann.json", images, [], CATEGORIES)
    with pytest.raises(FileNotFoundError, match=r"2 image file\(s\).*b\.png, c\.png"):
        CocoDetection(tmp_path / "img", path)


def test_corrupt_image_is_skipped_warned_and_counted(tmp_path: Path) -> None:
    images = make_images(tmp_path / "img", ["good.png", "bad.jpg"])
    (tmp_path / "img" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    anns = [{"id": 1, "image_id": 2, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 0}]
    ds = CocoDetection(tmp_path / "img", write_coco(tmp_path / "a.json", images, anns, CATEGORIES),
                       transform=build_transforms("ssd", 16, train=True, seed=0))
    with pytest.warns(UserWarning, match="bad.jpg"):
        item = ds[1]
    assert item is None
    assert ds.stats.num_unreadable == 1 and ds.stats.unreadable == ["bad.jpg"]
    images_t, targets = detection_collate([ds[0], None])
    assert images_t.shape == (1, 3, 16, 16) and [t["file_name"] for t in targets] == ["good.png"]
    empty, none = detection_collate([None])
    assert empty.shape[0] == 0 and none == []


def test_exif_rotated_image_keeps_boxes_on_the_object(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    shown, (x1, y1, x2, y2) = make_exif_rotated(tmp_path / "img" / "r.jpg")
    # The annotation is made on the image as displayed (40 high, 60 wide).
    images = [{"id": 1, "file_name": "r.jpg", "width": 60, "height": 40}]
    anns = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0}]
    ds = CocoDetection(tmp_path / "img", write_coco(tmp_path / "a.json", images, anns, CATEGORIES))
    image, target = ds[0]
    assert target["orig_size"] == (40, 60)
    bx1, by1, bx2, by2 = (int(v) for v in target["boxes"][0])
    red = image[0] > 0.5
    assert red[by1:by2, bx1:bx2].float().mean() > 0.95  # the box is filled by the red block
    assert red.sum() == red[by1:by2, bx1:bx2].sum()  # and no red lies outside it


def test_counts_match_pycocotools_on_coco_reference() -> None:
    ann = shared("coco-eval-reference") / "faster_coco_eval" / "cocoapi" / "instances_val2014_100.json"
    ds = CocoDetection(ann.parent, ann, check_files=False)  # the images themselves are not shipped
    coco = COCO(str(ann))
    assert len(ds) == len(coco.getImgIds()) == 100
    non_crowd = coco.getAnnIds(iscrowd=False)
    assert ds.stats.crowd == len(coco.getAnnIds()) - len(non_crowd) == 9
    assert ds.stats.boxes + len(ds.stats.dropped_invalid) + len(ds.stats.dropped_outside) == len(non_crowd) == 830
    assert ds.label_map.num_classes == 81
    assert list(ds.label_map.category_ids) == sorted(coco.getCatIds())

from __future__ import annotations

import json
import math
import warnings
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


def test_a_few_missing_images_are_skipped_named_and_counted(tmp_path: Path) -> None:
    images = make_images(tmp_path / "img", ["a.png", "b.png", "c.png", "d.png"])
    (tmp_path / "img" / "b.png").unlink()
    (tmp_path / "img" / "d.png").unlink()  # 2 of 4: not more than half, so skipped
    anns = [{"id": 1, "image_id": 2, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 0},
            {"id": 2, "image_id": 3, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 0}]
    path = write_coco(tmp_path / "ann.json", images, anns, CATEGORIES)
    with pytest.warns(UserWarning, match=r"2 image file\(s\) of the 4 listed.*skipping them \(and their 1 annotation"
                                         r"\(s\)\): b\.png, d\.png"):
        ds = CocoDetection(tmp_path / "img", path)
    assert len(ds) == 2 and [ds[i][1]["file_name"] for i in range(2)] == ["a.png", "c.png"]
    assert ds.stats.missing == ["b.png", "d.png"] and ds.stats.num_missing == 2 and ds.stats.images == 2
    assert ds.stats.boxes == 1  # the missing image's box is not counted as served
    assert sorted(ds.coco.imgs) == [1, 2, 3, 4]  # evaluation over self.coco still sees every listed image


@pytest.mark.parametrize("present", [0, 1])
def test_more_than_half_missing_is_a_wrong_folder(tmp_path: Path, present: int) -> None:
    images = make_images(tmp_path / "img", ["a.png", "b.png", "c.png"])
    for name in ["a.png", "b.png", "c.png"][present:]:
        (tmp_path / "img" / name).unlink()
    path = write_coco(tmp_path / "ann.json", images, [], CATEGORIES)
    missing = 3 - present
    with pytest.raises(FileNotFoundError, match=rf"{missing} image file\(s\) of the 3 listed in .*ann\.json.*"
                                                r"right images folder.*c\.png") as err:
        CocoDetection(tmp_path / "img", path)
    assert ("holds e.g. a.png" in str(err.value)) == bool(present)
    assert ("holds no image files" in str(err.value)) == (not present)


def test_wrong_images_folder_says_it_does_not_exist(tmp_path: Path) -> None:
    images = make_images(tmp_path / "img", ["a.png"])
    path = write_coco(tmp_path / "ann.json", images, [], CATEGORIES)
    with pytest.raises(FileNotFoundError, match=r"1 image file\(s\) of the 1 listed.*a\.png; the folder does not exist"):
        CocoDetection(tmp_path / "nope", path)


def test_strict_missing_stops_on_one_file(tmp_path: Path) -> None:
    images = make_images(tmp_path / "img", ["a.png", "b.png", "c.png"])
    (tmp_path / "img" / "c.png").unlink()
    path = write_coco(tmp_path / "ann.json", images, [], CATEGORIES)
    with pytest.raises(FileNotFoundError, match=r"1 image file\(s\) of the 3 listed.*missing='error'.*c\.png"):
        CocoDetection(tmp_path / "img", path, missing="error")
    with pytest.raises(ValueError, match="missing must be"):
        CocoDetection(tmp_path / "img", path, missing="ignore")


def test_missing_found_when_read_without_check_files(tmp_path: Path) -> None:
    images = make_images(tmp_path / "img", ["a.png", "b.png"])
    (tmp_path / "img" / "b.png").unlink()
    path = write_coco(tmp_path / "ann.json", images, [], CATEGORIES)
    ds = CocoDetection(tmp_path / "img", path, check_files=False)
    assert len(ds) == 2
    with pytest.warns(UserWarning, match="missing image .*b.png"):
        assert ds[1] is None and ds[1] is None
    assert ds.stats.missing == ["b.png"] and ds.stats.unreadable == []  # once, though read twice
    strict = CocoDetection(tmp_path / "img", path, check_files=False, missing="error")
    with pytest.raises(FileNotFoundError, match="b.png"):
        strict[1]


def carla_like(tmp_path: Path) -> list[dict]:
    """Image entries as the CARLA dataset's train.json has them: many frames share '_semantic'."""
    return ([{"id": i, "file_name": f"{i:06d}.png", "width": 64, "height": 38} for i in (60, 120, 180)]
            + [{"id": 120, "file_name": "town2_000120.png", "width": 64, "height": 38}]
            + [{"id": 7, "file_name": f"_semantic{k}", "width": 64, "height": 38} for k in range(3)])


def test_duplicate_image_ids_are_refused_naming_file_and_ids(tmp_path: Path) -> None:
    path = write_coco(tmp_path / "train.json", carla_like(tmp_path), [], CATEGORIES)
    with pytest.raises(ValueError, match=r"train\.json: duplicate image ids: 3 image entries reuse an id.*"
                                         r"2 id\(s\).*7 \(x3\), 120 \(x2\)"):
        CocoDetection(tmp_path, path)


def test_carla_string_ids_are_refused_as_duplicates(tmp_path: Path) -> None:
    # The real file's ids are strings and 126 entries share '_semantic'.
    images = [{"id": "_semantic", "file_name": "_semantic", "width": 64, "height": 38}] * 3
    images += [{"id": "009540", "file_name": "009540.png", "width": 64, "height": 38}]
    path = write_coco(tmp_path / "train.json", images, [], CATEGORIES)
    with pytest.raises(ValueError, match=r"train\.json: duplicate image ids.*'_semantic' \(x3\)"):
        CocoDetection(tmp_path, path)
    path = write_coco(tmp_path / "ids.json", images[3:], [], CATEGORIES)
    with pytest.raises(ValueError, match=r"ids\.json: image ids must be integers.*'009540'"):
        CocoDetection(tmp_path, path)


def test_duplicate_file_names_and_annotation_ids_are_refused(tmp_path: Path) -> None:
    images = make_images(tmp_path / "img", ["a.png", "b.png"])
    twice = images + [{"id": 3, "file_name": "a.png", "width": 50, "height": 40}]
    path = write_coco(tmp_path / "names.json", twice, [], CATEGORIES)
    with pytest.raises(ValueError, match=r"names\.json: duplicate file names: 1 image entries.*'a\.png' \(x2\)"):
        CocoDetection(tmp_path / "img", path)
    anns = [{"id": 5, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 0},
            {"id": 5, "image_id": 2, "category_id": 3, "bbox": [2, 2, 5, 5], "iscrowd": 0}]
    path = write_coco(tmp_path / "anns.json", images, anns, CATEGORIES)
    with pytest.raises(ValueError, match=r"anns\.json: duplicate annotation ids: 1 annotations.*5 \(x2\)"):
        CocoDetection(tmp_path / "img", path)


def test_orphan_annotations_are_warned_and_counted(tmp_path: Path) -> None:
    images = make_images(tmp_path / "img", ["a.png"])
    anns = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 0},
            {"id": 2, "image_id": 99, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 0}]
    with pytest.warns(UserWarning, match=r"1 annotation\(s\) refer to an image_id.*annotation id\(s\) 2"):
        ds = CocoDetection(tmp_path / "img", write_coco(tmp_path / "a.json", images, anns, CATEGORIES))
    assert ds.stats.orphan_annotations == [2] and ds.stats.boxes == 1


def test_zero_byte_image_is_skipped_and_named(tmp_path: Path) -> None:
    images = make_images(tmp_path / "img", ["good.png", "empty.jpg"])
    (tmp_path / "img" / "empty.jpg").write_bytes(b"")
    ds = CocoDetection(tmp_path / "img", write_coco(tmp_path / "a.json", images, [], CATEGORIES))
    with pytest.warns(UserWarning, match=r"empty\.jpg: empty file \(0 bytes\)"):
        assert ds[1] is None
    assert ds.stats.unreadable == ["empty.jpg"] and ds.stats.missing == []


def test_json_size_disagreeing_with_the_image_uses_the_real_size(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    pixels = np.zeros((40, 50, 3), np.uint8)
    pixels[10:20, 30:45] = 255  # the object: x 30..45, y 10..20 in the real 50x40 image
    save_rgb(tmp_path / "img" / "a.png", pixels)
    # The JSON claims 25x20 (say, written for a thumbnail): the box lies outside that claimed size.
    images = [{"id": 1, "file_name": "a.png", "width": 25, "height": 20}]
    anns = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [30, 10, 15, 10], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [40, 30, 20, 20], "iscrowd": 0}]  # past 50x40
    with pytest.warns(UserWarning, match="outside"):  # counted against the JSON's size at construction
        ds = CocoDetection(tmp_path / "img", write_coco(tmp_path / "a.json", images, anns, CATEGORIES))
    with pytest.warns(UserWarning, match=r"a\.png: the image is 50x40 .* says 25x20; using the real size"):
        image, target = ds[0]
    assert target["orig_size"] == (40, 50)
    assert target["boxes"].tolist() == [[30, 10, 45, 20], [40, 30, 50, 40]]  # clipped to 50x40, not 25x20
    x1, y1, x2, y2 = (int(v) for v in target["boxes"][0])
    assert image[0, y1:y2, x1:x2].min() == 1.0 and image[0].sum() == (x2 - x1) * (y2 - y1)  # on the object
    assert ds.stats.size_mismatch == ["a.png"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per file, not every epoch
        ds[0]


def test_json_size_swapped_hints_at_exif(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    make_exif_rotated(tmp_path / "img" / "r.jpg")  # displayed 60x40, stored 40x60
    images = [{"id": 1, "file_name": "r.jpg", "width": 40, "height": 60}]
    ds = CocoDetection(tmp_path / "img", write_coco(tmp_path / "a.json", images, [], CATEGORIES))
    with pytest.warns(UserWarning, match=r"r\.jpg: the image is 60x40 .* says 40x60 \(width and height swapped"):
        ds[0]


def test_non_utf8_annotation_file_names_the_file(tmp_path: Path) -> None:
    text = json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "café"}]}, ensure_ascii=False)
    (tmp_path / "latin1.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.json.*not UTF-8 text"):
        CocoDetection(tmp_path, tmp_path / "latin1.json")
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # Windows tools write a BOM
    assert CocoDetection(tmp_path, tmp_path / "bom.json").label_map.names == ("café",)

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pytest
from PIL import Image

from data_helpers import save_rgb, shared
from detector.data.converters import read_split_file, voc_to_coco, yolo_to_coco
from detector.data.io import load_image

# A COCO set the tests write out as VOC / YOLO and read back. Sizes (w, h) differ per image.
COCO_IMAGES = [("a.png", 64, 48), ("b.png", 40, 40), ("c.png", 50, 30)]
CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
COCO_BOXES = {  # file -> [(category name, [x, y, w, h])]
    "a.png": [("dog", [3, 4, 20, 10]), ("cat", [30, 20, 34, 28])],
    "b.png": [("cat", [0, 0, 40, 40])],
    "c.png": [],
}


def make_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, w, h in COCO_IMAGES:
        save_rgb(folder / name, np.zeros((h, w, 3), np.uint8))


def write_voc(folder: Path, extra: dict[str, list[tuple[str, list[float]]]] | None = None) -> None:
    """VOC XML as LabelImg writes it: pixel-edge xmin/ymin/xmax/ymax."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, w, h in COCO_IMAGES:
        objects = [(n, [x, y, x + bw, y + bh]) for n, (x, y, bw, bh) in COCO_BOXES[name]]
        objects += (extra or {}).get(name, [])
        objs = "".join(
            f"<object><name>{escape(n)}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for n, b in objects
        )
        xml = (f"<annotation><filename>{name}</filename><size><width>{w}</width><height>{h}</height>"
               f"<depth>3</depth></size>{objs}</annotation>")
        (folder / f"{Path(name).stem}.xml").write_text(xml)


def boxes_by_file(coco: dict) -> dict[str, list[tuple[str, list[float]]]]:
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    out: dict[str, list] = {f: [] for f in files.values()}
    for a in coco["annotations"]:
        out[files[a["image_id"]]].append((names[a["category_id"]], a["bbox"]))
    return out


def test_voc_round_trip(tmp_path: Path) -> None:
    make_images(tmp_path / "img")
    write_voc(tmp_path / "xml")
    coco, report = voc_to_coco(tmp_path / "xml", tmp_path / "img")
    assert coco["categories"] == CATEGORIES
    assert boxes_by_file(coco) == COCO_BOXES
    assert [(i["file_name"], i["width"], i["height"]) for i in coco["images"]] == COCO_IMAGES
    assert (report.images, report.boxes, report.num_dropped, report.images_without_boxes) == (3, 3, 0, 1)
    assert all(a["area"] == a["bbox"][2] * a["bbox"][3] for a in coco["annotations"])


def test_voc_clips_and_drops_with_reasons(tmp_path: Path) -> None:
    make_images(tmp_path / "img")
    extra = {
        "a.png": [("cat", [50, 40, 80, 60])],  # past the 64x48 image: clipped to [50, 40, 64, 48]
        "b.png": [("dog", [10, 10, 10, 10]), ("dog", [10, 20, 5, 30]), ("dog", [45, 45, 60, 60])],
    }
    write_voc(tmp_path / "xml", extra)
    coco, report = voc_to_coco(tmp_path / "xml", tmp_path / "img")
    assert ("cat", [50.0, 40.0, 14.0, 8.0]) in boxes_by_file(coco)["a.png"]
    assert report.clipped == 1 and report.boxes == 4
    assert len(report.dropped["zero or negative size"]) == 2
    assert report.dropped["outside the image"] == ["b.xml object 3 (dog)"]
    summary = report.summary()
    assert "boxes dropped: 3" in summary and "b.xml object 1 (dog)" in summary


def test_voc_split_file(tmp_path: Path) -> None:
    make_images(tmp_path / "img")
    write_voc(tmp_path / "xml")
    (tmp_path / "train.txt").write_text("c\na\n")
    coco, _ = voc_to_coco(tmp_path / "xml", tmp_path / "img", split_file=tmp_path / "train.txt")
    assert [i["file_name"] for i in coco["images"]] == ["c.png", "a.png"]
    assert read_split_file(tmp_path / "train.txt") == ["c", "a"]


def write_yolo(labels: Path, classes: Path) -> None:
    labels.mkdir(parents=True, exist_ok=True)
    classes.write_text("cat\ndog\n")
    index = {"cat": 0, "dog": 1}
    for name, w, h in COCO_IMAGES:
        lines = [f"{index[n]} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}"
                 for n, (x, y, bw, bh) in COCO_BOXES[name]]
        if lines:  # an image with no boxes has no label file, as YOLO tools write it
            (labels / f"{Path(name).stem}.txt").write_text("\n".join(lines) + "\n")


def test_yolo_round_trip(tmp_path: Path) -> None:
    make_images(tmp_path / "img")
    write_yolo(tmp_path / "labels", tmp_path / "classes.txt")
    coco, report = yolo_to_coco(tmp_path / "img", tmp_path / "labels", tmp_path / "classes.txt")
    assert coco["categories"] == CATEGORIES
    got = boxes_by_file(coco)
    assert set(got) == set(COCO_BOXES)
    for name, expected in COCO_BOXES.items():
        assert [n for n, _ in got[name]] == [n for n, _ in expected]
        for (_, b), (_, e) in zip(got[name], expected):
            assert np.allclose(b, e, atol=1e-3)  # 6 decimals of a normalised coordinate
    assert (report.images, report.boxes, report.images_without_boxes) == (3, 3, 1)


def test_yolo_reads_sizes_after_exif_rotation(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    stored = Image.new("RGB", (30, 60))  # stored 30 wide, displayed 60 wide after orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "img" / "r.jpg", exif=exif)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "r.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "c.txt").write_text("thing\n")
    coco, _ = yolo_to_coco(tmp_path / "img", tmp_path / "labels", tmp_path / "c.txt")
    assert (coco["images"][0]["width"], coco["images"][0]["height"]) == (60, 30)
    assert coco["annotations"][0]["bbox"] == [15.0, 7.5, 30.0, 15.0]


def test_yolo_bad_class_names_file_and_line(tmp_path: Path) -> None:
    make_images(tmp_path / "img")
    write_yolo(tmp_path / "labels", tmp_path / "classes.txt")
    (tmp_path / "labels" / "b.txt").write_text("0 0.5 0.5 0.1 0.1\n5 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ValueError, match=r"b\.txt:2: class 5"):
        yolo_to_coco(tmp_path / "img", tmp_path / "labels", tmp_path / "classes.txt")


def test_raccoon_counts_match_manifest() -> None:
    root = shared("raccoon")
    coco, report = voc_to_coco(root / "annotations", root / "images")
    assert (report.images, report.boxes, report.num_dropped) == (200, 217, 0)
    assert coco["categories"] == [{"id": 1, "name": "raccoon"}]
    per_image = np.bincount([a["image_id"] for a in coco["annotations"]])
    assert per_image.max() == 3
    sizes = [(i["width"], i["height"]) for i in coco["images"]]
    # MANIFEST: "from 178x154 to 2000x1333" (smallest and largest side lengths).
    assert min(w for w, _ in sizes) == 178 and min(h for _, h in sizes) == 154
    assert max(w for w, _ in sizes) == 2000 and max(h for _, h in sizes) == 1333
    grey = [p for p in sorted((root / "images").glob("*.jpg")) if Image.open(p).mode == "L"]
    assert len(grey) == 3
    for p in grey:  # the grayscale photos decode to three channels
        assert load_image(p).shape[2] == 3


def test_bccd_counts_match_manifest() -> None:
    root = shared("bccd") / "BCCD"
    coco, report = voc_to_coco(root / "Annotations", root / "JPEGImages")
    assert report.images == 364 and report.boxes == 4888 - 2
    assert dict(report.boxes_per_class) == {"RBC": 4155 - 2, "WBC": 372, "Platelets": 361}
    dropped = report.dropped["zero or negative size"]
    assert len(dropped) == 2 and {d.split()[0] for d in dropped} == {"BloodImage_00338.xml", "BloodImage_00343.xml"}
    splits = {s: len(read_split_file(root / "ImageSets" / "Main" / f"{s}.txt")) for s in ("train", "val", "test")}
    assert splits == {"train": 205, "val": 87, "test": 72}
    train, _ = voc_to_coco(root / "Annotations", root / "JPEGImages", root / "ImageSets" / "Main" / "train.txt")
    assert len(train["images"]) == 205

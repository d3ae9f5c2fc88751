from __future__ import annotations

import contextlib
import csv
import io
import json
from collections import Counter
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from data_helpers import save_rgb, shared
from detector.data.coco import CocoDetection
from detector.data.converters import IMAGE_EXTENSIONS, read_split_file, voc_to_coco, write_coco, yolo_to_coco
from detector.data.io import IMAGE_SUFFIXES, load_image

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


def voc_xml(file_name: str, w: int | str, h: int, objects: str) -> str:
    return (f"<annotation><filename>{file_name}</filename><size><width>{w}</width><height>{h}</height></size>"
            f"{objects}</annotation>")


def voc_object(name: str, box: list[float], difficult: int = 0) -> str:
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{box[0]}</xmin>"
            f"<ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>")


def test_malformed_voc_files_are_skipped_and_reported(tmp_path: Path) -> None:
    make_images(tmp_path / "img")
    write_voc(tmp_path / "xml")
    good = (tmp_path / "xml" / "b.xml").read_text()
    (tmp_path / "xml" / "b.xml").write_text(good[: len(good) // 2])  # truncated mid-element
    (tmp_path / "xml" / "c.xml").write_text(voc_xml("c.png", 50, 30, "<object><name>cat</name><bndbox><xmin>1</xmin>"
                                                                      "<ymin>x</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"))
    coco, report = voc_to_coco(tmp_path / "xml", tmp_path / "img")
    assert [i["file_name"] for i in coco["images"]] == ["a.png"]  # the images of bad files are left out too
    malformed = report.dropped["malformed XML"]
    assert len(malformed) == 2
    assert malformed[0].startswith("b.xml: not well-formed XML")
    assert malformed[1] == "c.xml: object 0: <ymin> is not a number: 'x'"
    assert "malformed XML: 2 [b.xml" in report.summary()


def test_voc_missing_bndbox_and_wrong_root_are_malformed(tmp_path: Path) -> None:
    make_images(tmp_path / "img")
    write_voc(tmp_path / "xml")
    (tmp_path / "xml" / "a.xml").write_text(voc_xml("a.png", 64, 48, "<object><name>cat</name></object>"))
    (tmp_path / "xml" / "b.xml").write_text("<html><body>not VOC</body></html>")
    (tmp_path / "xml" / "d.xml").write_text(voc_xml("d.png", "nan", 30, voc_object("cat", [1, 1, 5, 5])))
    _, report = voc_to_coco(tmp_path / "xml", tmp_path / "img")
    assert report.dropped["malformed XML"] == ["a.xml: object 0: missing <xmin>",
                                               "b.xml: root element is <html>, not <annotation>",
                                               "d.xml: <size>: <width> is nan"]


def test_voc_all_files_malformed_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "xml").mkdir()
    (tmp_path / "xml" / "a.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match=r"none of the 1 XML files.*a\.xml: not well-formed"):
        voc_to_coco(tmp_path / "xml")


def test_voc_encodings(tmp_path: Path) -> None:
    (tmp_path / "xml").mkdir()
    obj = voc_object("café", [1, 2, 11, 12])
    # Declared Latin-1: XML carries its own encoding, so this one is read correctly.
    declared = '<?xml version="1.0" encoding="ISO-8859-1"?>' + voc_xml("a.png", 20, 20, obj)
    (tmp_path / "xml" / "a.xml").write_bytes(declared.encode("latin-1"))
    # Undeclared Latin-1 bytes are not UTF-8: reported as malformed, naming the file.
    (tmp_path / "xml" / "b.xml").write_bytes(voc_xml("b.png", 20, 20, obj).encode("latin-1"))
    coco, report = voc_to_coco(tmp_path / "xml")
    assert coco["categories"] == [{"id": 1, "name": "café"}] and coco["annotations"][0]["bbox"] == [1, 2, 10, 10]
    assert len(report.dropped["malformed XML"]) == 1
    assert report.dropped["malformed XML"][0].startswith("b.xml: not well-formed XML")


def test_voc_difficult_is_an_ignore_region_by_default(tmp_path: Path) -> None:
    (tmp_path / "xml").mkdir()
    objs = voc_object("cat", [2, 2, 12, 12]) + voc_object("cat", [20, 20, 30, 30], difficult=1)
    (tmp_path / "xml" / "a.xml").write_text(voc_xml("a.png", 40, 40, objs))
    coco, report = voc_to_coco(tmp_path / "xml")
    easy, hard = coco["annotations"]
    assert easy["iscrowd"] == 0 and "difficult" not in easy
    assert (hard["iscrowd"], hard["difficult"], hard["bbox"]) == (1, 1, [20, 20, 10, 10])
    assert report.difficult == 1 and "VOC difficult: 1" in report.summary()
    kept, _ = voc_to_coco(tmp_path / "xml", difficult="keep")
    assert [(a["iscrowd"], a.get("difficult", 0)) for a in kept["annotations"]] == [(0, 0), (0, 1)]
    dropped, report = voc_to_coco(tmp_path / "xml", difficult="drop")
    assert len(dropped["annotations"]) == 1 and report.dropped["difficult (difficult='drop')"] == ["a.xml object 1 (cat)"]


def test_voc_difficult_is_neither_hit_nor_miss_for_pycocotools_and_not_trained_on(tmp_path: Path) -> None:
    (tmp_path / "xml").mkdir()
    objs = voc_object("cat", [2, 2, 12, 12]) + voc_object("cat", [20, 20, 30, 30], difficult=1)
    (tmp_path / "xml" / "a.xml").write_text(voc_xml("a.png", 40, 40, objs))
    coco, _ = voc_to_coco(tmp_path / "xml")
    gt = COCO()
    gt.dataset = coco
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        # Both boxes found: the difficult one is no false positive; only the easy one found: no miss.
        for dets, expected_ap in (([[2, 2, 10, 10], [20, 20, 10, 10]], 1.0), ([[2, 2, 10, 10]], 1.0)):
            res = gt.loadRes([{"image_id": 1, "category_id": 1, "bbox": b, "score": 0.9} for b in dets])
            ev = COCOeval(gt, res, "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            assert ev.stats[1] == pytest.approx(expected_ap)  # AP50
    # Training: the dataset serves only the easy box (an ignore region is never a target).
    (tmp_path / "img").mkdir()
    save_rgb(tmp_path / "img" / "a.png", np.zeros((40, 40, 3), np.uint8))
    ds = CocoDetection(tmp_path / "img", write_coco(coco, tmp_path / "a.json"))
    assert ds[0][1]["boxes"].tolist() == [[2, 2, 12, 12]] and ds.stats.crowd == 1


def test_yolo_nan_and_inf_lines_are_dropped_with_the_reason(tmp_path: Path) -> None:
    make_images(tmp_path / "img")
    write_yolo(tmp_path / "labels", tmp_path / "classes.txt")
    with (tmp_path / "labels" / "b.txt").open("a") as f:
        f.write("0 nan 0.5 0.1 0.1\n1 0.5 0.5 inf 0.1\n0 0.5 -inf 0.1 0.1\n1 0.5 0.5 0.1 NaN\n")
    coco, report = yolo_to_coco(tmp_path / "img", tmp_path / "labels", tmp_path / "classes.txt")
    assert report.dropped["non-finite coordinates"] == ["b.txt:2", "b.txt:3", "b.txt:4", "b.txt:5"]
    assert report.boxes == 3 and report.num_dropped == 4
    assert all(np.isfinite(a["bbox"]).all() and np.isfinite(a["area"]) for a in coco["annotations"])


def test_yolo_non_utf8_label_file_names_it(tmp_path: Path) -> None:
    make_images(tmp_path / "img")
    write_yolo(tmp_path / "labels", tmp_path / "classes.txt")
    (tmp_path / "labels" / "a.txt").write_bytes("0 0.5 0.5 0.1 0.1 # façade\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"a\.txt: not UTF-8 text"):
        yolo_to_coco(tmp_path / "img", tmp_path / "labels", tmp_path / "classes.txt")
    (tmp_path / "classes.txt").write_bytes("chat\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"classes\.txt: not UTF-8 text"):
        yolo_to_coco(tmp_path / "img", tmp_path / "labels", tmp_path / "classes.txt")


def test_yolo_zero_byte_image_is_skipped_and_reported(tmp_path: Path) -> None:
    make_images(tmp_path / "img")
    write_yolo(tmp_path / "labels", tmp_path / "classes.txt")
    (tmp_path / "img" / "b.png").write_bytes(b"")
    coco, report = yolo_to_coco(tmp_path / "img", tmp_path / "labels", tmp_path / "classes.txt")
    assert [i["file_name"] for i in coco["images"]] == ["a.png", "c.png"]
    assert report.dropped["image unreadable"] == ["b.png: empty file (0 bytes)"]


def test_converters_use_the_one_suffix_list(tmp_path: Path) -> None:
    assert IMAGE_EXTENSIONS is IMAGE_SUFFIXES
    (tmp_path / "img").mkdir()
    Image.new("RGB", (10, 8)).save(tmp_path / "img" / "x.GIF")  # a suffix the old converter list lacked
    (tmp_path / "c.txt").write_text("thing\n")
    coco, _ = yolo_to_coco(tmp_path / "img", tmp_path / "lbl", tmp_path / "c.txt")
    assert [(i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [("x.GIF", 10, 8)]


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_raccoon_boxes_match_the_authors_csv_box_by_box() -> None:
    # The CSV was written by the dataset's author from the same XML with its own script (int values).
    root = shared("raccoon")
    coco, _ = voc_to_coco(root / "annotations", root / "images")
    images = {i["id"]: i for i in coco["images"]}
    # Pixel-edge convention: COCO x = xmin, w = xmax - xmin (no 1-based shift).
    got = Counter((images[a["image_id"]]["file_name"], images[a["image_id"]]["width"], images[a["image_id"]]["height"],
                   a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3])
                  for a in coco["annotations"])
    rows = csv_rows(root / "data" / "raccoon_labels.csv")
    assert {r["class"] for r in rows} == {"raccoon"}
    expected = Counter((r["filename"], int(r["width"]), int(r["height"]),
                        *(float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax"))) for r in rows)
    assert sum(expected.values()) == 217
    assert got == expected


def test_bccd_boxes_match_test_csv_box_by_box() -> None:
    root = shared("bccd")
    coco, _ = voc_to_coco(root / "BCCD" / "Annotations", root / "BCCD" / "JPEGImages")
    files = {i["id"]: i["file_name"] for i in coco["images"]}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    got = Counter((files[a["image_id"]], names[a["category_id"]], a["bbox"][0], a["bbox"][1],
                   a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]) for a in coco["annotations"])
    rows = csv_rows(root / "test.csv")  # columns: filename,cell_type,xmin,xmax,ymin,ymax
    boxes = [(r["filename"], r["cell_type"], float(r["xmin"]), float(r["ymin"]), float(r["xmax"]), float(r["ymax"]))
             for r in rows]
    zero_size = [b for b in boxes if b[4] <= b[2] or b[5] <= b[3]]
    assert [b[0] for b in zero_size] == ["BloodImage_00338.jpg", "BloodImage_00343.jpg"]  # MANIFEST's two defects
    expected = Counter(b for b in boxes if b not in zero_size)
    assert sum(expected.values()) == 4888 - 2
    assert got == expected


def test_every_split_gets_the_same_ids_with_classes_or_a_reference(tmp_path: Path) -> None:
    """Issue #39: by default a split numbers the classes it has, so one without "cat" calls "dog" 1; the
    tool's --classes (names, or a file) and --categories-from give every split the ids of the list."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tools_convert", Path(__file__).resolve().parents[2] / "tools" /
                                                  "convert_dataset.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    images, xml = tmp_path / "img", tmp_path / "xml"
    images.mkdir()
    xml.mkdir()
    for stem, names in (("a", ["dog"]), ("b", ["cat", "dog"])):
        save_rgb(images / f"{stem}.png", np.zeros((30, 50, 3), np.uint8))
        (xml / f"{stem}.xml").write_text(voc_xml(f"{stem}.png", 50, 30, "".join(voc_object(n, [1, 1, 20, 20])
                                                                                for n in names)))
        (tmp_path / f"{stem}.txt").write_text(stem + "\n")

    def categories(*extra: str, split: str = "a") -> list[dict]:
        out = tmp_path / f"{split}_{len(extra)}.json"
        assert tool.main(["--from", "voc", "--images", str(images), "--annotations", str(xml), "--split-file",
                          str(tmp_path / f"{split}.txt"), "--output", str(out), *extra]) == 0
        return json.loads(out.read_text())["categories"]

    assert categories() == [{"id": 1, "name": "dog"}]  # the default: what this split has
    assert categories(split="b") == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert categories("--classes", "cat,dog") == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    assert categories("--classes", str(tmp_path / "classes.txt"))[1] == {"id": 2, "name": "dog"}
    reference = tmp_path / "ref.json"
    reference.write_text(json.dumps({"images": [], "annotations": [],
                                     "categories": [{"id": 5, "name": "cat"}, {"id": 9, "name": "dog"}]}))
    assert categories("--categories-from", str(reference)) == [{"id": 5, "name": "cat"}, {"id": 9, "name": "dog"}]
    annotations = json.loads((tmp_path / "a_2.json").read_text())["annotations"]
    assert [a["category_id"] for a in annotations] == [9]


KITTI_LINE = "{t} {tr} {oc} -1.57 {x1} {y1} {x2} {y2} 1.5 1.6 3.9 1.0 1.7 20.0 -1.6"


def write_kitti(root: Path, lines: dict[str, list[str]]) -> tuple[Path, Path]:
    images, labels = root / "image_2", root / "label_2"
    images.mkdir(parents=True)
    labels.mkdir()
    for stem, rows in lines.items():
        save_rgb(images / f"{stem}.png", np.zeros((100, 300, 3), np.uint8))
        (labels / f"{stem}.txt").write_text("\n".join(rows) + "\n")
    return images, labels


def test_kitti_keeps_every_type_with_its_attributes_and_dontcare_as_ignore(tmp_path: Path) -> None:
    from detector.data.converters import kitti_to_coco

    images, labels = write_kitti(tmp_path, {"000000": [
        KITTI_LINE.format(t="Car", tr=0.0, oc=0, x1=10.5, y1=20, x2=60, y2=50),
        KITTI_LINE.format(t="Pedestrian", tr=0.3, oc=2, x1=100, y1=10, x2=120, y2=70),
        KITTI_LINE.format(t="DontCare", tr=-1, oc=-1, x1=200, y1=30, x2=250, y2=40)]})
    coco, report = kitti_to_coco(images, labels)
    assert [c["name"] for c in coco["categories"]] == ["Car", "Pedestrian"]
    car, person, *ignores = coco["annotations"]
    assert car["bbox"] == [10.5, 20.0, 49.5, 30.0] and car["iscrowd"] == 0
    assert (person["truncated"], person["occluded"], person["alpha"], person["kitti_type"]) == (0.3, 2, -1.57, "Pedestrian")
    # DontCare: an ignore region of each category (COCO ignores a crowd region per category).
    assert sorted(a["category_id"] for a in ignores) == [1, 2]
    assert all(a["iscrowd"] == 1 and a["bbox"] == [200.0, 30.0, 50.0, 10.0] for a in ignores)
    assert dict(report.boxes_per_class) == {"Car": 1, "Pedestrian": 1} and report.ignore_regions == 2


def test_kitti_class_map_merges_and_leaves_the_rest_as_ignore_regions(tmp_path: Path) -> None:
    from detector.data.converters import kitti_to_coco, parse_class_map

    images, labels = write_kitti(tmp_path, {"000001": [
        KITTI_LINE.format(t="Car", tr=0, oc=0, x1=1, y1=1, x2=30, y2=30),
        KITTI_LINE.format(t="Van", tr=0, oc=1, x1=40, y1=1, x2=90, y2=30),
        KITTI_LINE.format(t="Cyclist", tr=0, oc=0, x1=100, y1=1, x2=120, y2=40)]})
    mapping = parse_class_map(["Car,Van,Truck=vehicle", "Pedestrian=person"])
    coco, _ = kitti_to_coco(images, labels, mapping)
    assert coco["categories"] == [{"id": 1, "name": "vehicle"}, {"id": 2, "name": "person"}]
    kept = [(a["kitti_type"], a["category_id"]) for a in coco["annotations"] if not a["iscrowd"]]
    assert kept == [("Car", 1), ("Van", 1)]
    cyclist = [a["category_id"] for a in coco["annotations"] if a["iscrowd"]]
    assert sorted(cyclist) == [1, 2]  # out of the map: ignored for both categories
    with pytest.raises(ValueError, match="mapped twice"):
        parse_class_map(["Car=vehicle", "Car=car"])
    with pytest.raises(ValueError, match="expected 'NAME"):
        parse_class_map(["Car"])


@pytest.mark.parametrize(("line", "message"), [
    ("Car 0 0 -1 1 2 3", "7 fields"),
    ("Car 0 0 -1 10 x 30 40 1 1 1 1 1 1 1", "not numbers"),
    ("Car 0 0 -1 30 20 10 40 1 1 1 1 1 1 1", "x2 < x1"),
])
def test_kitti_bad_line_names_file_and_line(line: str, message: str, tmp_path: Path) -> None:
    from detector.data.converters import kitti_to_coco

    images, labels = write_kitti(tmp_path, {"000002": [KITTI_LINE.format(t="Car", tr=0, oc=0, x1=1, y1=1, x2=9,
                                                                          y2=9), line]})
    with pytest.raises(ValueError, match=rf"000002.txt:2: .*{message}"):
        kitti_to_coco(images, labels)


def test_kitti_label_without_image_is_named_and_counted(tmp_path: Path) -> None:
    from detector.data.converters import kitti_to_coco

    images, labels = write_kitti(tmp_path, {"000003": [KITTI_LINE.format(t="Car", tr=0, oc=0, x1=1, y1=1, x2=9, y2=9)]})
    (labels / "000004.txt").write_text(KITTI_LINE.format(t="Car", tr=0, oc=0, x1=1, y1=1, x2=9, y2=9) + "\n")
    coco, report = kitti_to_coco(images, labels)
    assert len(coco["images"]) == 1 and report.dropped["image file missing"][0].startswith("000004.txt")


def test_kitti_dev_counts_match_manifest() -> None:
    from detector.data.converters import kitti_to_coco

    root = shared("kitti-dev")
    coco, report = kitti_to_coco(root / "image_2", root / "label_2")
    assert report.images == 50
    assert dict(report.boxes_per_class) == {"Car": 147, "Van": 14, "Truck": 7, "Pedestrian": 23, "Cyclist": 7,
                                            "Tram": 4, "Misc": 2}
    assert report.ignore_regions == 145 * 7  # DontCare, once per category


def test_bdd100k_frames_to_coco(tmp_path: Path) -> None:
    """A file written from BDD100K's published label format (github.com/bdd100k/bdd100k doc/format.md; the
    2020 detection set uses the same frame / labels / box2d layout with its pedestrian, bicycle, motorcycle)."""
    from detector.data.converters import bdd100k_to_coco

    images = tmp_path / "images"
    images.mkdir()
    save_rgb(images / "b1c66a42-6f7d68ca.jpg", np.zeros((72, 128, 3), np.uint8))
    frames = [
        {"name": "b1c66a42-6f7d68ca.jpg", "attributes": {"weather": "clear", "timeofday": "daytime"}, "timestamp": 10000,
         "labels": [
             {"id": 1, "category": "car", "attributes": {"occluded": True, "truncated": False, "trafficLightColor": "none"},
              "box2d": {"x1": 10.0, "y1": 20.0, "x2": 40.5, "y2": 50.0}},
             {"id": 2, "category": "traffic light", "attributes": {"occluded": False, "truncated": False,
                                                                 "trafficLightColor": "green"},
              "box2d": {"x1": 100, "y1": 5, "x2": 104, "y2": 15}},
             {"id": 3, "category": "lane", "attributes": {}, "poly2d": [[0, 0, "L"], [5, 5, "L"]]},
             {"id": 4, "category": "pedestrian", "attributes": {"occluded": False, "truncated": True},
              "box2d": {"x1": 60, "y1": 10, "x2": 70, "y2": 40}}]},
        {"name": "missing.jpg", "labels": []},
    ]
    (tmp_path / "labels.json").write_text(json.dumps(frames))
    coco, report = bdd100k_to_coco(images, tmp_path / "labels.json")
    assert [c["name"] for c in coco["categories"]] == ["car", "pedestrian", "traffic light"]
    car = coco["annotations"][0]
    assert car["bbox"] == [10.0, 20.0, 30.5, 30.0] and (car["occluded"], car["truncated"]) == (1, 0)
    assert report.dropped["image file missing"] == ["frame 1: missing.jpg"]
    mapped, _ = bdd100k_to_coco(images, tmp_path / "labels.json", {"car": "vehicle", "pedestrian": "person"})
    assert [c["name"] for c in mapped["categories"]] == ["vehicle", "person"]
    assert sum(a["iscrowd"] for a in mapped["annotations"]) == 2  # the traffic light, for both categories
    (tmp_path / "bad.json").write_text(json.dumps([{"name": "b1c66a42-6f7d68ca.jpg",
                                                     "labels": [{"category": "car", "box2d": {"x1": 1}}]}]))
    with pytest.raises(ValueError, match="label 0"):
        bdd100k_to_coco(images, tmp_path / "bad.json")

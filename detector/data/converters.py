"""Converters from Pascal VOC XML, YOLO text, KITTI and BDD100K labels to COCO-format JSON.

Every dataset enters the project as COCO JSON; VOC and YOLO are the formats custom data most often
arrives in, KITTI and BDD100K those driving data does. Both clip boxes to the image and drop (and report) boxes that are empty after that.

Coordinate conventions:
- VOC ``<bndbox>`` values are read as pixel-edge ``xyxy`` (``w = xmax - xmin``), the convention of
  LabelImg and most exporters that write VOC today; a ``xmin == xmax`` box is zero-size. No 1-based
  shift is applied (the original VOC devkit's 1-based inclusive reading would move every box by one
  pixel and widen it by one): COCO ``x = xmin``, ``y = ymin``, ``w = xmax - xmin``, ``h = ymax - ymin``.
- VOC ``<difficult>1</difficult>``: by default the box is kept as an ignore region, ``iscrowd=1``
  with ``"difficult": 1`` (mmdetection's reading, and VOC's metric: detecting it is neither a hit
  nor a false positive, missing it is no miss; pycocotools treats ``iscrowd`` the same way). This
  project's training never uses ``iscrowd`` boxes as targets. ``difficult="keep"`` writes it as an
  ordinary box (``iscrowd=0``, ``"difficult": 1``; detectron2 trains on them), ``"drop"`` leaves it out.
- YOLO lines are ``class cx cy w h`` normalised by the image's width and height (as displayed,
  i.e. after EXIF rotation); ``class`` indexes the classes file, 0-based.
"""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from detector.data.io import IMAGE_SUFFIXES, ImageReadError, image_size, list_images

__all__ = ["IMAGE_EXTENSIONS", "ConversionReport", "bdd100k_to_coco", "kitti_to_coco", "parse_class_map",
           "read_split_file", "read_text", "voc_to_coco", "write_coco", "yolo_to_coco"]

IMAGE_EXTENSIONS = IMAGE_SUFFIXES  # the old name of detector.data.io's one list, kept for callers
PathT = str | PathLike[str]
Difficult = Literal["ignore", "keep", "drop"]


@dataclass
class ConversionReport:
    """What a conversion produced and what it dropped, with reasons."""

    images: int = 0
    boxes: int = 0
    classes: list[str] = field(default_factory=list)
    boxes_per_class: Counter = field(default_factory=Counter)
    clipped: int = 0
    dropped: dict[str, list[str]] = field(default_factory=dict)  # reason -> ["file: detail", ...]
    images_without_boxes: int = 0
    difficult: int = 0  # VOC difficult boxes written (as iscrowd=1 ignore regions, or kept as boxes)
    ignore_regions: int = 0  # KITTI / BDD100K boxes out of the class map (and DontCare), as iscrowd=1

    def drop(self, reason: str, where: str) -> None:
        self.dropped.setdefault(reason, []).append(where)

    @property
    def num_dropped(self) -> int:
        return sum(len(v) for v in self.dropped.values())

    def summary(self) -> str:
        lines = [
            f"images: {self.images} ({self.images_without_boxes} without boxes)",
            f"boxes: {self.boxes} (clipped to the image: {self.clipped}"
            + (f"; VOC difficult: {self.difficult}" if self.difficult else "")
            + (f"; ignore regions (iscrowd=1, one per category): {self.ignore_regions}" if self.ignore_regions else "")
            + ")",
            f"classes: {len(self.classes)}: "
            + ", ".join(f"{c} ({self.boxes_per_class.get(c, 0)})" for c in self.classes),
            f"boxes dropped: {self.num_dropped}",
        ]
        for reason, where in sorted(self.dropped.items()):
            shown = "; ".join(where[:5]) + (f"; ... ({len(where) - 5} more)" if len(where) > 5 else "")
            lines.append(f"  {reason}: {len(where)} [{shown}]")
        return "\n".join(lines)


def read_text(path: PathT) -> str:
    """A UTF-8 text file (a byte-order mark is accepted); a clear ``ValueError`` names a file that is not."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8") from err


def read_split_file(path: PathT) -> list[str]:
    """Image stems listed one per line (VOC ``ImageSets/Main/*.txt``; paths or names also accepted)."""
    stems = []
    for line in read_text(path).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            # VOC's per-class lists read "name  1"; keep the name.
            stems.append(Path(line.split()[0]).stem)
    return stems


def _in_split(files: list[Path], split_file: PathT | None, what: str) -> list[Path]:
    """``files`` whose stems ``split_file`` lists, in its order (all of them without one).

    Raises:
        FileNotFoundError: entries of the split without a file (``what`` names the kind and folder).
    """
    if split_file is None:
        return files
    wanted = read_split_file(split_file)
    by_stem = {p.stem: p for p in files}
    missing = [s for s in wanted if s not in by_stem]
    if missing:
        raise FileNotFoundError(f"{len(missing)} entries of {split_file} have no {what}: {missing[:20]}")
    return [by_stem[s] for s in wanted]


def write_coco(coco: dict[str, Any], path: PathT) -> Path:
    """Write COCO JSON (creating the folder); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(coco))
    return out


def _clip_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int,
              report: ConversionReport, where: str) -> list[float] | None:
    """Clip an xyxy box; return COCO ``[x, y, w, h]`` or None (dropped and reported)."""
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        report.drop("non-finite coordinates", where)
        return None
    if x2 <= x1 or y2 <= y1:
        report.drop("zero or negative size", where)
        return None
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    if cx2 <= cx1 or cy2 <= cy1:
        report.drop("outside the image", where)
        return None
    report.clipped += int((cx1, cy1, cx2, cy2) != (x1, y1, x2, y2))
    return [cx1, cy1, cx2 - cx1, cy2 - cy1]


def _find_image(images_dir: Path, file_name: str, stem: str) -> Path | None:
    candidate = images_dir / file_name
    if file_name and candidate.is_file():
        return candidate
    for ext in IMAGE_SUFFIXES:
        for e in (ext, ext.upper()):
            if (images_dir / f"{stem}{e}").is_file():
                return images_dir / f"{stem}{e}"
    return None


def _number(node: ET.Element | None, tag: str, where: str = "") -> float:
    at = f"{where}: " if where else ""
    child = node.find(tag) if node is not None else None
    if child is None or child.text is None or not child.text.strip():
        raise _Malformed(f"{at}missing <{tag}>")
    try:
        return float(child.text)
    except ValueError as err:
        raise _Malformed(f"{at}<{tag}> is not a number: {child.text!r}") from err


def _size(size: ET.Element | None, tag: str) -> int:
    """``<size><width>`` / ``<height>``; 0 when absent or empty (then read from the image)."""
    if size is None or not (size.findtext(tag) or "").strip():
        return 0
    value = _number(size, tag, "<size>")
    if not math.isfinite(value) or value < 0:
        raise _Malformed(f"<size>: <{tag}> is {value}")
    return int(value)


Parsed = tuple[str, int, int, list[tuple[str, list[float], dict[str, int]]]]  # file, w, h, [(class, xywh, extra)]


def voc_to_coco(
    annotations_dir: PathT,
    images_dir: PathT | None = None,
    split_file: PathT | None = None,
    class_names: Sequence[str] | None = None,
    difficult: Difficult = "ignore",
    categories: Sequence[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], ConversionReport]:
    """Convert a folder of Pascal VOC XML files to a COCO dict.

    Args:
        annotations_dir: folder of ``*.xml``.
        images_dir: the images; used to find files with another extension than ``<filename>`` says
            and to read sizes missing from the XML. Images that are absent or unreadable are
            reported and skipped.
        split_file: VOC ``ImageSets`` list; only those stems are converted.
        class_names: fixes the category order (ids 1..K); by default the sorted names found (so a
            split that lacks a class numbers the others otherwise: give every split the same list).
        categories: COCO ``categories`` (``{"id", "name"}``) to use as they are, ids included (e.g. the
            converted train split's); replaces ``class_names``.
        difficult: what ``<difficult>1</difficult>`` boxes become (see the module docstring):
            ``"ignore"`` (``iscrowd=1``), ``"keep"`` (an ordinary box) or ``"drop"`` (reported).

    A malformed file (not well-formed XML, an object without a numeric ``<bndbox>``, a bad ``<size>``)
    is skipped whole, with its image, and reported under "malformed XML": keeping the image without
    one of its objects would teach that object as background.

    Returns:
        ``(coco, report)``; ``images[*].file_name`` is relative to ``images_dir``.

    Raises:
        FileNotFoundError: no XML, or split entries without XML.
        ValueError: every XML file is malformed (the first few named), or a file has no size and no
            ``images_dir`` to read it from.
    """
    if difficult not in ("ignore", "keep", "drop"):
        raise ValueError(f"difficult must be 'ignore', 'keep' or 'drop', got {difficult!r}")
    ann_dir = Path(annotations_dir)
    img_dir = Path(images_dir) if images_dir is not None else None
    xml_files = _in_split(sorted(ann_dir.glob("*.xml")), split_file, f"XML in {ann_dir}")
    if not xml_files:
        raise FileNotFoundError(f"no VOC *.xml files in {ann_dir}")
    report = ConversionReport()
    parsed: list[Parsed] = []
    for xml_path in xml_files:
        try:
            item = _parse_voc(xml_path, img_dir, report, difficult)
        except _Malformed as err:
            report.drop("malformed XML", f"{xml_path.name}: {err}")
            continue
        if item is not None:
            parsed.append(item)
    malformed = report.dropped.get("malformed XML", [])
    if len(malformed) == len(xml_files):
        raise ValueError(f"none of the {len(xml_files)} XML files in {ann_dir} is valid VOC: {'; '.join(malformed[:3])}")
    if categories is not None:
        ids = {str(c["name"]): int(c["id"]) for c in categories}
        return _assemble(parsed, list(ids), report, ids)
    names = list(class_names) if class_names is not None else sorted({n for *_, objs in parsed for n, *_ in objs})
    return _assemble(parsed, names, report)


class _Malformed(ValueError):
    """A VOC file this converter cannot read; the message says what is wrong."""


def _parse_voc(xml_path: Path, img_dir: Path | None, report: ConversionReport, difficult: Difficult) -> Parsed | None:
    """One VOC file as ``(file_name, width, height, objects)``; None when its image is absent or unreadable."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        raise _Malformed(f"not well-formed XML ({err})") from err
    if root.tag != "annotation":
        raise _Malformed(f"root element is <{root.tag}>, not <annotation>")
    file_name = (root.findtext("filename") or "").strip() or f"{xml_path.stem}.jpg"
    size = root.find("size")
    width, height = _size(size, "width"), _size(size, "height")
    if img_dir is not None:
        found = _find_image(img_dir, file_name, xml_path.stem)
        if found is None:
            report.drop("image file missing", f"{xml_path.name}: {file_name}")
            return None
        file_name = found.relative_to(img_dir).as_posix()
        if width <= 0 or height <= 0:
            try:
                height, width = image_size(found)
            except ImageReadError as err:
                report.drop("image unreadable", f"{xml_path.name}: {err.reason}")
                return None
    if width <= 0 or height <= 0:
        raise ValueError(f"{xml_path}: no <size> and no images_dir to read the image size from")
    objects = []
    for i, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        where = f"{xml_path.name} object {i} ({name})"
        if not name:
            raise _Malformed(f"object {i} has no <name>")
        bnd = obj.find("bndbox")
        coords = [_number(bnd, t, f"object {i}") for t in ("xmin", "ymin", "xmax", "ymax")]
        box = _clip_box(*coords, width, height, report, where)
        if box is None:
            continue
        if (obj.findtext("difficult") or "0").strip().lower() in ("1", "true"):
            if difficult == "drop":
                report.drop("difficult (difficult='drop')", where)
                continue
            report.difficult += 1
            objects.append((name, box, {"iscrowd": int(difficult == "ignore"), "difficult": 1}))
        else:
            objects.append((name, box, {}))
    return file_name, width, height, objects


def _assemble(
    parsed: Iterable[Parsed],
    names: Sequence[str],
    report: ConversionReport,
    ids: dict[str, int] | None = None,
) -> tuple[dict[str, Any], ConversionReport]:
    cat_of = dict(ids) if ids is not None else {n: i + 1 for i, n in enumerate(names)}
    images, annotations = [], []
    for image_id, (file_name, width, height, objects) in enumerate(parsed, start=1):
        images.append({"id": image_id, "file_name": file_name, "width": int(width), "height": int(height)})
        kept = 0
        for name, box, extra in objects:
            if name not in cat_of:
                report.drop("class not in the class list", f"{file_name}: {name}")
                continue
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat_of[name],
                                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "iscrowd": 0,
                                **extra})
            if extra.get("ignore_region"):
                report.ignore_regions += 1
                continue
            report.boxes_per_class[name] += 1
            kept += 1
        report.images_without_boxes += int(kept == 0)
    report.images, report.boxes, report.classes = len(images), len(annotations), list(names)
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": cat_of[n], "name": n} for n in names]}
    return coco, report


def yolo_to_coco(
    images_dir: PathT,
    labels_dir: PathT,
    classes_file: PathT,
    split_file: PathT | None = None,
) -> tuple[dict[str, Any], ConversionReport]:
    """Convert YOLO text labels to a COCO dict.

    Args:
        images_dir: the images (searched recursively); an image without a label file has no boxes.
        labels_dir: ``<stem>.txt`` per image, lines ``class cx cy w h`` normalised to 0..1.
        classes_file: one class name per line; line ``i`` is YOLO class ``i`` and COCO id ``i + 1``.
        split_file: only the images whose stems (or paths) it lists.

    A line with NaN or infinite numbers is dropped and reported under "non-finite coordinates";
    an image that cannot be read is skipped and reported under "image unreadable".

    Raises:
        ValueError: a malformed line, a class index outside the classes file (file and line named),
            or a label / classes file that is not UTF-8 text (file named).
    """
    img_dir, lbl_dir = Path(images_dir), Path(labels_dir)
    names = [ln.strip() for ln in read_text(classes_file).splitlines() if ln.strip()]
    if not names:
        raise ValueError(f"{classes_file}: no class names")
    images = list_images(img_dir)
    if split_file is not None:
        wanted = set(read_split_file(split_file))
        images = [p for p in images if p.stem in wanted]
    if not images:
        raise FileNotFoundError(f"no images in {img_dir}")
    report = ConversionReport()
    parsed: list[Parsed] = []
    for path in images:
        try:
            height, width = image_size(path)
        except ImageReadError as err:
            report.drop("image unreadable", f"{path.relative_to(img_dir).as_posix()}: {err.reason}")
            continue
        objects = []
        label_path = lbl_dir / path.relative_to(img_dir).with_suffix(".txt")
        if not label_path.is_file():
            label_path = lbl_dir / f"{path.stem}.txt"
        if label_path.is_file():
            for line_no, line in enumerate(read_text(label_path).splitlines(), start=1):
                parts = line.split()
                if not parts:
                    continue
                where = f"{label_path}:{line_no}"
                if len(parts) < 5:
                    raise ValueError(f"{where}: expected 'class cx cy w h', got {line!r}")
                try:
                    cls = int(parts[0])
                    cx, cy, w, h = (float(v) for v in parts[1:5])
                except ValueError as err:
                    raise ValueError(f"{where}: not numbers: {line!r}") from err
                if not 0 <= cls < len(names):
                    raise ValueError(f"{where}: class {cls} is not in {classes_file} ({len(names)} classes)")
                x1, y1 = (cx - w / 2) * width, (cy - h / 2) * height
                x2, y2 = (cx + w / 2) * width, (cy + h / 2) * height
                box = _clip_box(x1, y1, x2, y2, width, height, report, f"{label_path.name}:{line_no}")
                if box is not None:
                    objects.append((names[cls], box, {}))
        parsed.append((path.relative_to(img_dir).as_posix(), width, height, objects))
    return _assemble(parsed, names, report)


# --- driving formats: KITTI and BDD100K ----------------------------------------------------------

KITTI_DONT_CARE = "DontCare"
# KITTI's label_2 line: type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y [score]
# (the devkit's readme; boxes in pixels, 0-based, x2 > x1).
_KITTI_FIELDS = 15


def parse_class_map(items: Iterable[str]) -> dict[str, str]:
    """``["Car,Van,Truck=vehicle", "Pedestrian=person"]`` -> ``{"Car": "vehicle", ..., "Pedestrian": "person"}``.

    Raises:
        ValueError: an item without ``=``, an empty name, or a source name mapped twice.
    """
    mapping: dict[str, str] = {}
    for item in items:
        sources, sep, target = str(item).partition("=")
        names = [s.strip() for s in sources.split(",") if s.strip()]
        if not sep or not names or not target.strip():
            raise ValueError(f"class map {item!r}: expected 'NAME[,NAME...]=TARGET', e.g. 'Car,Van,Truck=vehicle'")
        for name in names:
            if name in mapping:
                raise ValueError(f"class map: {name!r} is mapped twice ({mapping[name]!r} and {target.strip()!r})")
            mapping[name] = target.strip()
    return mapping


def _categories_and_ignores(types: Iterable[str], class_map: dict[str, str] | None,
                            ignore: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """The category names (in the map's order, else sorted) and each kept source type's category."""
    ignored = set(ignore)
    if class_map:
        names = list(dict.fromkeys(class_map.values()))
        return names, dict(class_map)
    names = sorted({t for t in types if t not in ignored})
    return names, {n: n for n in names}


def _driving_objects(boxes: list[tuple[str, list[float], dict[str, Any]]], category_of: dict[str, str],
                     names: Sequence[str]) -> list[tuple[str, list[float], dict[str, Any]]]:
    """Kept boxes under their category; every other box (a type out of the map, a don't-care region) as
    an ``iscrowd=1`` ignore region of every category, since COCO ignores a crowd region per category."""
    objects = []
    for source_type, box, attributes in boxes:
        if source_type in category_of:
            objects.append((category_of[source_type], box, attributes))
        else:
            for name in names:
                objects.append((name, box, {**attributes, "iscrowd": 1, "ignore_region": 1}))
    return objects


def _frame_size(image: Path | None, report: ConversionReport, missing: str) -> tuple[int, int] | None:
    """``(height, width)`` of a frame's image; None when it is absent (reported as ``missing``) or
    unreadable (reported)."""
    if image is None:
        report.drop("image file missing", missing)
        return None
    try:
        return image_size(image)
    except ImageReadError as err:
        report.drop("image unreadable", f"{image.name}: {err.reason}")
        return None


def kitti_to_coco(
    images_dir: PathT,
    labels_dir: PathT,
    class_map: dict[str, str] | None = None,
    split_file: PathT | None = None,
) -> tuple[dict[str, Any], ConversionReport]:
    """Convert KITTI object labels (``label_2/NNNNNN.txt``) to a COCO dict.

    Args:
        images_dir: the frames (``image_2``), found by the label file's stem.
        labels_dir: one text file per frame, a line per object:
            ``type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y`` (boxes in pixels).
        class_map: KITTI type -> category name (``{"Car": "vehicle", "Van": "vehicle"}``); several types
            may share one. ``None`` keeps every type as its own category (``DontCare`` excepted).
        split_file: only the stems it lists.

    Types left out of the map and ``DontCare`` regions become ignore regions (``iscrowd=1``, one per
    category, ``"ignore_region": 1``): KITTI's evaluation ignores detections there. Every annotation keeps
    KITTI's ``truncated`` (float), ``occluded`` (0..3), ``alpha`` and ``kitti_type``, so a KITTI metric can
    set its difficulty levels from the COCO file alone. A label file without its image is skipped, named
    and counted.

    Raises:
        FileNotFoundError: no label files, or split entries without one.
        ValueError: a malformed line (field count, a non-number, ``x2 < x1`` or ``y2 < y1``), file and
            line named.
    """
    img_dir, lbl_dir = Path(images_dir), Path(labels_dir)
    label_files = _in_split(sorted(lbl_dir.glob("*.txt")), split_file, f"label file in {lbl_dir}")
    if not label_files:
        raise FileNotFoundError(f"no KITTI label files (*.txt) in {lbl_dir}")
    report = ConversionReport()
    frames: list[tuple[str, int, int, list[tuple[str, list[float], dict[str, Any]]]]] = []
    types: set[str] = set()
    for label_path in label_files:
        image = _find_image(img_dir, "", label_path.stem)
        size = _frame_size(image, report, f"{label_path.name}: no {label_path.stem}.* in {img_dir}")
        if size is None:
            continue
        height, width = size
        boxes = []
        for line_no, line in enumerate(read_text(label_path).splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            where = f"{label_path}:{line_no}"
            if len(parts) not in (_KITTI_FIELDS, _KITTI_FIELDS + 1):
                raise ValueError(f"{where}: {len(parts)} fields, KITTI's label line has {_KITTI_FIELDS} "
                                 f"('type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y'): {line!r}")
            try:
                truncated, occluded, alpha, x1, y1, x2, y2 = (float(v) for v in parts[1:8])
            except ValueError as err:
                raise ValueError(f"{where}: not numbers: {line!r}") from err
            if x2 < x1 or y2 < y1:
                raise ValueError(f"{where}: box x1 y1 x2 y2 = {x1} {y1} {x2} {y2} has x2 < x1 or y2 < y1")
            box = _clip_box(x1, y1, x2, y2, width, height, report, f"{label_path.name}:{line_no}")
            if box is None:
                continue
            types.add(parts[0])
            boxes.append((parts[0], box, {"truncated": truncated, "occluded": int(occluded), "alpha": alpha,
                                          "kitti_type": parts[0]}))
        frames.append((image.relative_to(img_dir).as_posix(), width, height, boxes))
    names, category_of = _categories_and_ignores(types, class_map, [KITTI_DONT_CARE])
    category_of.pop(KITTI_DONT_CARE, None)  # DontCare is a region to ignore, whatever the map says
    parsed = [(f, w, h, _driving_objects(b, category_of, names)) for f, w, h, b in frames]
    return _assemble(parsed, names, report)


def bdd100k_to_coco(
    images_dir: PathT,
    labels_file: PathT,
    class_map: dict[str, str] | None = None,
) -> tuple[dict[str, Any], ConversionReport]:
    """Convert BDD100K detection labels to a COCO dict.

    The format (github.com/bdd100k/bdd100k ``doc/format.md``, doc.bdd100k.com "Label Format"): a JSON
    list of frames (or ``{"frames": [...]}``), each ``{"name": "<file>.jpg", "labels": [{"category": str,
    "box2d": {"x1", "y1", "x2", "y2"}, "attributes": {"occluded": bool, "truncated": bool, ...}}, ...]}``.
    Labels without ``box2d`` (lanes, drivable areas) are not boxes and are skipped. Categories keep BDD's
    names: the 2018 release's person, rider, car, bus, truck, bike, motor, traffic light, traffic sign,
    train, or the 2020 detection set's pedestrian, bicycle and motorcycle for three of them.

    Args:
        images_dir: the frames ``name`` is relative to; sizes are read from them.
        labels_file: the JSON labels.
        class_map: category -> new name, as for :func:`kitti_to_coco`; categories left out of it become
            ignore regions. ``None`` keeps every category.

    Each annotation keeps ``occluded`` and ``truncated`` (0 / 1). A frame without its image is skipped,
    named and counted.

    Raises:
        ValueError: not JSON, not a list of frames, or a malformed box (the frame and label named).
    """
    img_dir = Path(images_dir)
    try:
        data = json.loads(read_text(labels_file))
    except json.JSONDecodeError as err:
        raise ValueError(f"{labels_file}: not JSON ({err})") from err
    frames_in = data.get("frames") if isinstance(data, dict) else data
    if not isinstance(frames_in, list) or not all(isinstance(f, dict) and "name" in f for f in frames_in):
        raise ValueError(f"{labels_file}: expected a list of frames, each with a 'name' and 'labels'")
    report = ConversionReport()
    frames = []
    categories: set[str] = set()
    for index, frame in enumerate(frames_in):
        image = img_dir / str(frame["name"])
        size = _frame_size(image if image.is_file() else None, report, f"frame {index}: {frame['name']}")
        if size is None:
            continue
        height, width = size
        boxes = []
        for label_index, label in enumerate(frame.get("labels") or []):
            box2d = label.get("box2d")
            if box2d is None:
                continue
            where = f"{labels_file}: frame {frame['name']} label {label_index}"
            try:
                x1, y1, x2, y2 = (float(box2d[k]) for k in ("x1", "y1", "x2", "y2"))
                category = str(label["category"])
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{where}: box2d needs numeric x1 y1 x2 y2 and a category ({err!r})") from err
            box = _clip_box(x1, y1, x2, y2, width, height, report, f"{frame['name']} label {label_index}")
            if box is None:
                continue
            attributes = label.get("attributes") or {}
            categories.add(category)
            boxes.append((category, box, {"occluded": int(bool(attributes.get("occluded", False))),
                                          "truncated": int(bool(attributes.get("truncated", False)))}))
        frames.append((Path(str(frame["name"])).as_posix(), width, height, boxes))
    names, category_of = _categories_and_ignores(categories, class_map, [])
    parsed = [(f, w, h, _driving_objects(b, category_of, names)) for f, w, h, b in frames]
    return _assemble(parsed, names, report)

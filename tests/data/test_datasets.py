"""detector.data.datasets: the tree digest, its refusals, the split rule and CARLA's preparation,
on a fake CARLA-layout folder (and on the real snapshot when this machine has it)."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from detector.data.coco import load_coco_json
from detector.data.datasets import (
    CARLA,
    DatasetMismatchError,
    PublicDataset,
    carve_split,
    extract_archive,
    find_dataset_root,
    prepare_carla,
    verify_tree,
)

REAL_SOURCE = Path("/tmp/carla_src")
W, H = 64, 38  # the fake frames keep CARLA's 640x380 aspect, at a tenth of the size

# stem -> [(class, xmin, ymin, xmax, ymax)]; the test frames are in Town05 as upstream's are.
TRAIN_OBJECTS: dict[str, list[tuple[str, int, int, int, int]]] = {
    "Town01_000060": [("vehicle", 10, 5, 30, 20), ("traffic_light", 40, 2, 43, 9)],
    "Town01_000120": [],  # a frame without boxes: kept as a negative
    "Town02_000060": [("bike", 0, 0, 8, 16), ("traffic_sign", 5, 5, 5, 9)],  # the sign has zero width
    "Town02_000120": [("motobike", 20, 10, 36, 30)],
    "Town03_000060": [("traffic_sign", 50, 3, 56, 9), ("vehicle", 1, 20, 63, 37)],
    "Town03_000120": [("tram", 1, 1, 5, 5), ("vehicle", 2, 2, 12, 12)],  # no such class in CARLA
    "Town04_000060": [("traffic_light", 30, 0, 33, 7)],
    "Town04_000120": [("vehicle", 5, 5, 25, 25)],
}
TEST_OBJECTS = {"Town05_000060": [("vehicle", 10, 10, 20, 20), ("traffic_light", 1, 1, 3, 6)], "Town05_000120": []}
VALID = {"vehicle", "bike", "motobike", "traffic_light", "traffic_sign"}


def _voc(stem: str, objects: list[tuple[str, int, int, int, int]]) -> str:
    parts = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
                    f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
    return (f"<annotation><folder>_semantic</folder><filename>{stem}.png</filename><size><width>{W}</width>"
            f"<height>{H}</height><depth>3</depth></size>{parts}</annotation>")


def make_fake_carla(root: Path) -> Path:
    """Upstream's layout: images/{train,test}/*.png (RGBA, as upstream), labels/{train,test}/*.xml,
    image_sets/{train,val,trainval,test}.txt, LICENSE."""
    for folder, frames in (("train", TRAIN_OBJECTS), ("test", TEST_OBJECTS)):
        (root / "images" / folder).mkdir(parents=True)
        (root / "labels" / folder).mkdir(parents=True)
        for i, (stem, objects) in enumerate(frames.items()):
            Image.new("RGBA", (W, H), (i * 20, 100, 50, 255)).save(root / "images" / folder / f"{stem}.png")
            (root / "labels" / folder / f"{stem}.xml").write_text(_voc(stem, objects))
    (root / "image_sets").mkdir()
    train = list(TRAIN_OBJECTS)
    for name, stems in (("trainval", train), ("train", train[:6]), ("val", train[6:]), ("test", list(TEST_OBJECTS))):
        (root / "image_sets" / f"{name}.txt").write_text("".join(f"{s}\n" for s in stems))
    (root / "LICENSE").write_text("MIT License (fake)\n")
    return root


def sha256sum_digest(root: Path, prefix: str = "") -> str:
    """The documented digest written out independently: sha256 of `sha256sum` lines sorted by path."""
    files = sorted(p.relative_to(root).as_posix() for f in ("images", "labels", "image_sets")
                   for p in (root / f).rglob("*") if p.is_file() and not p.name.startswith("."))
    lines = "".join(f"{hashlib.sha256((root / p).read_bytes()).hexdigest()}  {p}\n"
                    for p in files if p.startswith(prefix))
    return hashlib.sha256(lines.encode()).hexdigest()


def fake_dataset(root: Path) -> PublicDataset:
    """CARLA's record with the digests of the fake tree at ``root``."""
    return dataclasses.replace(
        CARLA,
        tree_digest=sha256sum_digest(root),
        folder_digests={f: sha256sum_digest(root, f + "/") for f in
                        ("image_sets", "images/test", "images/train", "labels/test", "labels/train")},
        file_digests={f"image_sets/{n}": hashlib.sha256((root / "image_sets" / n).read_bytes()).hexdigest()
                      for n in ("test.txt", "train.txt", "trainval.txt", "val.txt")},
    )


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Path, PublicDataset]:
    root = make_fake_carla(tmp_path / "Carla-Object-Detection-Dataset")
    return root, fake_dataset(root)


# --- the digest --------------------------------------------------------------------------------------

def test_digest_is_the_documented_sha256sum_pipeline(fake: tuple[Path, PublicDataset]) -> None:
    root, dataset = fake
    assert verify_tree(root, dataset) == dataset.tree_digest
    if shutil.which("sha256sum") and shutil.which("find") and shutil.which("xargs"):
        done = subprocess.run("find images labels image_sets -type f | LC_ALL=C sort | xargs sha256sum | sha256sum",
                              shell=True, cwd=root, capture_output=True, text=True, check=True)
        assert done.stdout.split()[0] == dataset.tree_digest


def test_crlf_clone_and_dotfiles_still_verify(fake: tuple[Path, PublicDataset]) -> None:
    root, dataset = fake
    for path in [*(root / "labels" / "train").glob("*.xml"), root / "image_sets" / "test.txt"]:
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))  # what core.autocrlf writes on Windows
    (root / "images" / "train" / ".DS_Store").write_bytes(b"\0\1")
    assert verify_tree(root, dataset) == dataset.tree_digest


def test_a_modified_image_is_refused_naming_its_folder(fake: tuple[Path, PublicDataset]) -> None:
    root, dataset = fake
    png = root / "images" / "train" / "Town02_000120.png"
    png.write_bytes(png.read_bytes() + b"\0")
    with pytest.raises(DatasetMismatchError) as error:
        verify_tree(root, dataset)
    message = str(error.value)
    assert "content of images/train/ differs" in message and dataset.tree_digest in message
    assert "labels/" not in message.split("expected")[1].split("Re-extract")[0]  # only the changed folder is named


def test_a_modified_split_list_is_named(fake: tuple[Path, PublicDataset]) -> None:
    root, dataset = fake
    listing = root / "image_sets" / "val.txt"
    listing.write_text("Town04_000060\n")
    with pytest.raises(DatasetMismatchError, match=r"image_sets/val\.txt differs from the recorded file"):
        verify_tree(root, dataset)


def test_missing_and_unexpected_files_are_named(fake: tuple[Path, PublicDataset]) -> None:
    root, dataset = fake
    (root / "labels" / "test" / "Town05_000120.xml").unlink()
    (root / "images" / "test" / "extra.png").write_bytes(b"x")
    with pytest.raises(DatasetMismatchError) as error:
        verify_tree(root, dataset)
    message = str(error.value)
    assert "1 file(s) missing: labels/test/Town05_000120.xml" in message
    assert "1 unexpected file(s): images/test/extra.png" in message


def test_recorded_carla_digests_are_consistent() -> None:
    # The per-folder digests must be those of the folders the tree digest covers, no more, no less.
    assert set(CARLA.folder_digests) == {"image_sets", "images/test", "images/train", "labels/test", "labels/train"}
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in [CARLA.tree_digest, *CARLA.folder_digests.values()])
    assert CARLA.archive_url == ("https://codeload.github.com/DanielHfnr/Carla-Object-Detection-Dataset/tar.gz/"
                                 "2a10f67a1ad64695390d09bf260a999006b670b6")


# --- the split rule ----------------------------------------------------------------------------------

def test_split_rule_is_the_documented_hash_order() -> None:
    stems = [f"Town0{t}_{i:06d}" for t in range(1, 5) for i in range(0, 1200, 60)]  # 80 frames
    train, val = carve_split(stems, 0.1, seed=0)
    by_hash = sorted(stems, key=lambda s: hashlib.sha256(f"0:{s}".encode()).hexdigest())
    assert set(val) == set(by_hash[:8]) and len(val) == 8
    assert sorted(train + val) == sorted(stems) and not set(train) & set(val)
    assert val == [s for s in stems if s in set(val)]  # input order kept


def test_split_rule_ignores_input_order_and_follows_the_seed() -> None:
    stems = [f"f{i}" for i in range(50)]
    train, val = carve_split(stems, 0.2, seed=3)
    train_r, val_r = carve_split(stems[::-1], 0.2, seed=3)
    assert set(val) == set(val_r) and set(train) == set(train_r) and len(val) == 10
    assert set(carve_split(stems, 0.2, seed=4)[1]) != set(val)


@pytest.mark.parametrize("stems, fraction",
                         [(["a", "b"], 0.0), (["a", "b"], 1.0), (["a"], 0.1), (["a", "a", "b"], 0.3)])
def test_split_rule_refuses_what_it_cannot_split(stems: list[str], fraction: float) -> None:
    with pytest.raises(ValueError):
        carve_split(stems, fraction)


# --- preparation -------------------------------------------------------------------------------------

def _expected_counts(stems: list[str], frames: dict) -> dict[str, int]:
    counts = {c: 0 for c in CARLA.classes}
    for stem in stems:
        for name, a, b, c, d in frames[stem]:
            if name in VALID and c > a and d > b:
                counts[name] += 1
    return counts


def test_prepare_writes_the_layout_from_the_voc_labels(fake: tuple[Path, PublicDataset], tmp_path: Path) -> None:
    root, dataset = fake
    out = tmp_path / "data" / "carla"
    prepared = prepare_carla(root, out, val_fraction=0.25, seed=0, dataset=dataset)

    by_hash = sorted(TRAIN_OBJECTS, key=lambda s: hashlib.sha256(f"0:{s}".encode()).hexdigest())
    val_stems = set(by_hash[:2])
    expected = {"train": [s for s in TRAIN_OBJECTS if s not in val_stems],
                "val": [s for s in TRAIN_OBJECTS if s in val_stems], "test": list(TEST_OBJECTS)}
    for split in prepared.splits:
        coco = load_coco_json(out / f"{split.name}.json")  # the project's loader accepts it
        frames = TEST_OBJECTS if split.name == "test" else TRAIN_OBJECTS
        folder = "test" if split.name == "test" else "train"
        assert [im["file_name"] for im in coco["images"]] == [f"{folder}/{s}.png" for s in expected[split.name]]
        assert all((out / "images" / im["file_name"]).is_file() for im in coco["images"])
        assert [c["name"] for c in coco["categories"]] == list(CARLA.classes)
        assert split.boxes_per_class == _expected_counts(expected[split.name], frames)
        assert split.negatives == sum(not any(_expected_counts([s], frames).values()) for s in expected[split.name])

    # VOC pixel edges to COCO xywh, no shift: vehicle (10, 5, 30, 20) of Town01_000060.
    train_split = "val" if "Town01_000060" in val_stems else "train"
    coco = load_coco_json(out / f"{train_split}.json")
    (image_id,) = [im["id"] for im in coco["images"] if im["file_name"] == "train/Town01_000060.png"]
    boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == image_id and a["category_id"] == 1]
    assert boxes == [[10.0, 5.0, 20.0, 15.0]]

    report = prepared.reports["trainval"]
    assert report.dropped.keys() == {"zero or negative size", "class not in the class list"}
    assert report.images_without_boxes == 1 and prepared.reports["test"].images_without_boxes == 1
    assert (out / "LICENSE").read_text() == "MIT License (fake)\n"
    source = json.loads((out / "SOURCE.json").read_text())
    assert source["commit"] == CARLA.commit and source["tree_digest"] == dataset.tree_digest
    assert source["counts"]["val"]["images"] == 2


def test_prepare_refuses_a_modified_copy_and_writes_nothing(fake: tuple[Path, PublicDataset], tmp_path: Path) -> None:
    root, dataset = fake
    xml = root / "labels" / "train" / "Town04_000120.xml"
    xml.write_text(xml.read_text().replace("<xmin>5</xmin>", "<xmin>6</xmin>"))
    with pytest.raises(DatasetMismatchError, match="labels/train/"):
        prepare_carla(root, tmp_path / "out", dataset=dataset)
    assert not (tmp_path / "out").exists()


def test_prepare_refuses_to_write_into_its_source(fake: tuple[Path, PublicDataset]) -> None:
    root, dataset = fake
    with pytest.raises(ValueError, match="must not be the source"):
        prepare_carla(root, root, dataset=dataset)


def test_root_is_found_inside_an_extract_folder(fake: tuple[Path, PublicDataset], tmp_path: Path) -> None:
    root, _ = fake
    assert find_dataset_root(root) == root
    assert find_dataset_root(root.parent) == root
    with pytest.raises(FileNotFoundError, match="holds no carla dataset"):
        find_dataset_root(root / "images")


def _tar(root: Path, archive: Path, top: str, extra: tuple[str, bytes] | None = None) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname=top)
        if extra is not None:
            info = tarfile.TarInfo(extra[0])
            info.size = len(extra[1])
            tar.addfile(info, io.BytesIO(extra[1]))


def test_extract_keeps_only_the_dataset_and_refuses_escapes(fake: tuple[Path, PublicDataset], tmp_path: Path) -> None:
    root, dataset = fake
    (root / "annotations").mkdir()
    (root / "annotations" / "train.json").write_text("{}")  # upstream's defective COCO: not extracted
    archive = tmp_path / "a.tar.gz"
    _tar(root, archive, dataset.archive_root)
    extracted = extract_archive(archive, tmp_path / "x", dataset)
    assert verify_tree(extracted, dataset) == dataset.tree_digest
    assert (extracted / "LICENSE").is_file() and not (extracted / "annotations").exists()

    bad = tmp_path / "bad.tar.gz"
    _tar(root, bad, dataset.archive_root, (f"{dataset.archive_root}/images/../../../evil.txt", b"x"))
    with pytest.raises(ValueError, match="outside"):
        extract_archive(bad, tmp_path / "y", dataset)
    assert not (tmp_path / "evil.txt").exists()


# --- the real snapshot (only where this machine has it) ----------------------------------------------

@pytest.mark.skipif(not (REAL_SOURCE / "image_sets").is_dir(), reason="no CARLA snapshot at /tmp/carla_src")
def test_real_carla_snapshot_verifies_and_prepares(tmp_path: Path) -> None:
    prepared = CARLA.prepare(REAL_SOURCE, tmp_path / "carla")
    counts = {s.name: s for s in prepared.splits}
    assert prepared.tree_digest == CARLA.tree_digest
    assert (counts["train"].images, counts["val"].images, counts["test"].images) == (701, 78, 249)
    assert sum(s.boxes for s in prepared.splits) == 4395  # every VOC box kept: none is degenerate
    assert counts["test"].boxes_per_class["traffic_light"] == 1586
    assert sum(s.negatives for s in prepared.splits) == 142

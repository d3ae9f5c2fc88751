from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from detector.data.coco import CocoDetection
from detector.data.synthetic import CLASSES, SyntheticConfig, make_split, render_image


def test_deterministic_per_seed(tmp_path: Path) -> None:
    config = SyntheticConfig(image_size=96)
    a = make_split(tmp_path / "a", "train", 6, seed=3, config=config)
    b = make_split(tmp_path / "b", "train", 6, seed=3, config=config)
    c = make_split(tmp_path / "c", "train", 6, seed=4, config=config)
    assert a == b and a["annotations"] != c["annotations"]
    for im in a["images"]:
        assert (tmp_path / "a" / "train" / im["file_name"]).read_bytes() == (tmp_path / "b" / "train" / im["file_name"]).read_bytes()


def test_boxes_are_tight_around_the_visible_shape() -> None:
    """One object, no clutter: the pixels of the object's colour span exactly its box."""
    config = SyntheticConfig(image_size=128, max_objects=1, empty_fraction=0.0, clutter=0, small_fraction=0.3)
    checked = 0
    for i in range(30):
        image, objects = render_image(np.random.default_rng(i), config)
        if len(objects) != 1:
            continue
        x, y, w, h = objects[0]["bbox"]
        # The centre of the box lies inside every shape here (all are convex or star-shaped about it).
        colour = image[y + h // 2, x + w // 2].astype(int)
        lo_x, lo_y = max(x - 3, 0), max(y - 3, 0)
        window = image[lo_y : y + h + 3, lo_x : x + w + 3].astype(int)
        ys, xs = np.nonzero(np.abs(window - colour).max(axis=2) < 20)  # sensor noise sigma is 3
        assert (xs.min() + lo_x, ys.min() + lo_y, xs.max() + lo_x + 1, ys.max() + lo_y + 1) == (x, y, x + w, y + h)
        checked += 1
    assert checked >= 25


def test_content_is_learnable_and_varied(tmp_path: Path) -> None:
    coco = make_split(tmp_path, "train", 60, seed=0)
    assert [c["name"] for c in coco["categories"]] == list(CLASSES)
    per_image = np.bincount([a["image_id"] for a in coco["annotations"]], minlength=61)[1:]
    assert per_image.max() <= 4 and (per_image == 0).any() and (per_image >= 2).any()
    extents = np.array([max(a["bbox"][2:]) for a in coco["annotations"]])
    assert np.median(extents) >= 40 and extents.max() > 160 and extents.min() < 40
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 320 and y + h <= 320 and w > 0 and h > 0
        assert 0 < a["area"] <= w * h and a["category_id"] in range(1, 6)
    assert set(a["category_id"] for a in coco["annotations"]) == {1, 2, 3, 4, 5}
    # The written set loads as a dataset with the same counts.
    ds = CocoDetection(tmp_path / "train", tmp_path / "train.json")
    assert len(ds) == 60 and ds.stats.boxes == len(coco["annotations"])
    assert json.loads((tmp_path / "train.json").read_text())["images"][0]["width"] == 320

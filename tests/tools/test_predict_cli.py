"""tools/predict.py: drawn images + COCO results with the user's ids, unreadable files, inputs, errors."""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detector import LabelMap, Predictor, build_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "predict.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("tools_predict", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two intra-op threads on a shared, loaded 2-core machine spin against each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "m.ckpt"
    save_checkpoint(path, build_model(num_classes=3, width_mult=0.35, image_size=128), LabelMap((7, 9), ("cat", "dog")))
    return path


def picture(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
    img[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = (230, 200, 40)
    return img


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(picture(90, 160, 1)).save(folder / "a.jpg", quality=95)
    Image.fromarray(picture(200, 120, 2)).save(folder / "sub" / "b.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "notes.txt").write_text("not an image, not picked up")
    return folder


def test_folder_writes_drawn_images_and_coco_results(ckpt: Path, photos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    rc = load_tool().main(["--checkpoint", str(ckpt), "--input", str(photos), "--output", str(out),
                           "--score-threshold", "0.2", "--batch-size", "2", "--no-progress"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "1 unreadable file(s) skipped" in captured.err
    assert "2 image(s)" in captured.out and str(out / "detections.json") in captured.out

    # Drawn copies under the same names and formats, same sizes, with something drawn on them.
    for name, fmt, src in [("a.jpg", "JPEG", photos / "a.jpg"), ("sub/b.png", "PNG", photos / "sub" / "b.png")]:
        with Image.open(out / name) as drawn, Image.open(src) as original:
            assert drawn.format == fmt and drawn.size == original.size
            diff = np.abs(np.asarray(drawn, np.int16) - np.asarray(original.convert("RGB"), np.int16))
            assert diff.max() > 100, f"no boxes drawn on {name}"
    assert not (out / "broken.jpg").exists()

    results = json.loads((out / "detections.json").read_text())
    index = json.loads((out / "images.json").read_text())
    assert [(im["id"], im["file_name"], im["width"], im["height"]) for im in index["images"]] == [
        (1, "a.jpg", 160, 90), (2, "sub/b.png", 120, 200)]
    assert index["categories"] == [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}]

    # Entries equal the Predictor's own detections, in COCO's [x, y, w, h] with the user's ids.
    predictor = Predictor.from_checkpoint(ckpt, score_threshold=0.2)
    for image in index["images"]:
        mine = [r for r in results if r["image_id"] == image["id"]]
        assert mine and all(r["file_name"] == image["file_name"] for r in mine)
        det = predictor.predict(photos / image["file_name"])
        assert [r["category_id"] for r in mine] == det["category_ids"].tolist()
        assert set(r["category_id"] for r in mine) <= {7, 9}
        xywh = det["boxes"].copy()
        xywh[:, 2:] -= xywh[:, :2]
        np.testing.assert_allclose([r["bbox"] for r in mine], xywh, atol=0.011)
        np.testing.assert_allclose([r["score"] for r in mine], det["scores"], atol=1e-5)
        for r in mine:
            x, y, w, h = r["bbox"]
            assert x >= 0 and y >= 0 and w >= 0 and h >= 0
            assert x + w <= image["width"] + 0.01 and y + h <= image["height"] + 0.01

    # pycocotools accepts the file as a results list.
    from pycocotools.coco import COCO
    gt = COCO()
    gt.dataset = {"images": index["images"], "categories": index["categories"], "annotations": []}
    gt.createIndex()
    assert len(gt.loadRes(str(out / "detections.json")).anns) == len(results)


def test_glob_single_file_and_classes(ckpt: Path, photos: Path, tmp_path: Path) -> None:
    tool = load_tool()
    out = tmp_path / "glob"
    assert tool.main(["--checkpoint", str(ckpt), "--input", str(photos / "**" / "*.png"), "--output", str(out),
                      "--classes", "dog", "--score-threshold", "0.0", "--no-progress"]) == 0
    assert (out / "b.png").is_file()
    results = json.loads((out / "detections.json").read_text())
    assert results and {r["category_id"] for r in results} == {9}
    out2 = tmp_path / "one"
    assert tool.main(["--checkpoint", str(ckpt), "--input", str(photos / "a.jpg"), "--output", str(out2),
                      "--no-progress"]) == 0
    assert (out2 / "a.jpg").is_file()


def test_errors_are_reported_not_raised(ckpt: Path, photos: Path, tmp_path: Path, capsys) -> None:
    tool = load_tool()
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "detector": argparse.Namespace()}, evil)
    assert tool.main(["--checkpoint", str(evil), "--input", str(photos), "--output", str(tmp_path / "o")]) == 1
    assert "weights_only=True" in capsys.readouterr().err
    assert tool.main(["--checkpoint", str(ckpt), "--input", str(photos), "--output", str(tmp_path / "o"),
                      "--classes", "horse"]) == 1
    assert "horse" in capsys.readouterr().err
    assert tool.main(["--checkpoint", str(ckpt), "--input", str(tmp_path / "missing"), "--output",
                      str(tmp_path / "o")]) == 1
    assert "missing" in capsys.readouterr().err
    # Only unreadable files: reported, and a non-zero exit since nothing was written.
    assert tool.main(["--checkpoint", str(ckpt), "--input", str(photos / "broken.jpg"), "--output",
                      str(tmp_path / "o"), "--no-progress"]) == 1
    assert "broken.jpg" in capsys.readouterr().err

"""The command-line scripts, run in-process on tiny inputs."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

from data_helpers import REPO, shared


def tool(name: str, folder: str = "tools") -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{folder}_{name}", REPO / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("syn")
    assert tool("make_synthetic").main(["--output", str(out), "--train", "12", "--val", "4", "--seed", "1",
                                        "--image-size", "128"]) == 0
    return out


def test_make_synthetic_layout(synthetic: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for split, n in (("train", 12), ("val", 4)):
        coco = json.loads((synthetic / f"{split}.json").read_text())
        assert len(coco["images"]) == n
        assert all((synthetic / split / im["file_name"]).is_file() for im in coco["images"])


def test_show_dataset_writes_a_grid(synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = tool("show_dataset").main(["--images", str(synthetic / "train"), "--annotations", str(synthetic / "train.json"),
                                    "--pipeline", "ssd", "--output", str(tmp_path), "-n", "6", "--image-size", "96"])
    assert rc == 0
    grid = cv2.imread(str(tmp_path / "samples_ssd.jpg"))
    assert grid.shape == (2 * 96, 3 * 96, 3)  # 6 tiles: 2 rows of 3
    assert "wrote" in capsys.readouterr().out


def test_benchmark_data_prints_a_table(synthetic: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = tool("data_loading", "benchmarks").main(["--images", str(synthetic / "train"), "--annotations", str(synthetic / "train.json"),
                                      "--workers", "0", "--batches", "2", "--repeats", "1", "--batch-size", "4",
                                      "--image-size", "96"])
    assert rc == 0
    out = capsys.readouterr().out
    row = [ln for ln in out.splitlines() if ln.startswith("| 0 |")]
    assert len(row) == 1 and float(row[0].split("|")[2]) > 0


def test_convert_dataset_voc_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = shared("bccd") / "BCCD"
    out = tmp_path / "bccd_val.json"
    rc = tool("convert_dataset").main(["--from", "voc", "--images", str(root / "JPEGImages"), "--annotations",
                                       str(root / "Annotations"), "--split-file", str(root / "ImageSets/Main/val.txt"),
                                       "--output", str(out)])
    assert rc == 0
    assert len(json.loads(out.read_text())["images"]) == 87
    printed = capsys.readouterr().out
    assert "images: 87" in printed and "classes: 3" in printed and "boxes dropped" in printed


def test_convert_dataset_yolo_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "img").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "x.png"), np.zeros((20, 40, 3), np.uint8))
    (tmp_path / "lbl").mkdir()
    (tmp_path / "lbl" / "x.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    (tmp_path / "classes.txt").write_text("a\nb\n")
    rc = tool("convert_dataset").main(["--from", "yolo", "--images", str(tmp_path / "img"), "--labels",
                                       str(tmp_path / "lbl"), "--classes", str(tmp_path / "classes.txt"),
                                       "--output", str(tmp_path / "o.json")])
    assert rc == 0
    coco = json.loads((tmp_path / "o.json").read_text())
    assert coco["annotations"][0]["bbox"] == [10.0, 5.0, 20.0, 10.0] and coco["annotations"][0]["category_id"] == 2

"""tools/fetch_dataset.py as a user runs it: --from a folder, the download route, a refused copy,
and the offline message."""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.error
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from detector.data import datasets
from detector.data.datasets import CARLA, PublicDataset

ROOT = Path(__file__).resolve().parents[2]
FRAMES = {"train": ["Town01_000060", "Town02_000060", "Town03_000060"], "test": ["Town05_000060"]}


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_dataset", ROOT / "tools" / "fetch_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_source(root: Path) -> Path:
    """A three-frame train, one-frame test copy of upstream's layout; one vehicle box per frame,
    and one zero-size traffic light in the first (the converter drops and reports it)."""
    for folder, stems in FRAMES.items():
        (root / "images" / folder).mkdir(parents=True)
        (root / "labels" / folder).mkdir(parents=True)
        for stem in stems:
            Image.new("RGB", (64, 38), (10, 20, 30)).save(root / "images" / folder / f"{stem}.png")
            extra = ("<object><name>traffic_light</name><bndbox><xmin>3</xmin><ymin>3</ymin><xmax>3</xmax>"
                     "<ymax>8</ymax></bndbox></object>") if stem == "Town01_000060" else ""
            (root / "labels" / folder / f"{stem}.xml").write_text(
                f"<annotation><filename>{stem}.png</filename><size><width>64</width><height>38</height></size>"
                f"<object><name>vehicle</name><bndbox><xmin>4</xmin><ymin>5</ymin><xmax>24</xmax><ymax>15</ymax>"
                f"</bndbox></object>{extra}</annotation>")
    (root / "image_sets").mkdir()
    for name, stems in (("trainval", FRAMES["train"]), ("train", FRAMES["train"][:2]), ("val", FRAMES["train"][2:]),
                        ("test", FRAMES["test"])):
        (root / "image_sets" / f"{name}.txt").write_text("".join(f"{s}\n" for s in stems))
    (root / "LICENSE").write_text("MIT\n")
    return root


def record_of(root: Path) -> PublicDataset:
    """CARLA's record with this tree's digests, computed as the docstring says (sha256sum lines)."""
    def digest(prefix: str) -> str:
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                       if p.is_file() and p.relative_to(root).as_posix().startswith(prefix))
        lines = "".join(f"{hashlib.sha256((root / f).read_bytes()).hexdigest()}  {f}\n" for f in files)
        return hashlib.sha256(lines.encode()).hexdigest()

    whole = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(root).as_posix()}\n"
                    for p in sorted((q for f in CARLA.folders for q in (root / f).rglob("*") if q.is_file()),
                                    key=lambda q: q.relative_to(root).as_posix()))
    return dataclasses.replace(
        CARLA, tree_digest=hashlib.sha256(whole.encode()).hexdigest(),
        folder_digests={f: digest(f + "/") for f in CARLA.folder_digests},
        file_digests={f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in CARLA.file_digests})


@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_source(tmp_path / "src")
    monkeypatch.setitem(datasets.DATASETS, "carla", record_of(root))
    return root


def test_from_a_folder_writes_the_layout_and_prints_counts(source: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data" / "carla"
    assert load_tool().main(["carla", "--output", str(out), "--from", str(source), "--val-fraction", "0.34"]) == 0
    printed = capsys.readouterr().out
    # One of the three train frames is val (round(0.34 * 3) = 1); each frame has one vehicle.
    table = [line.split() for line in printed.splitlines()]
    rows = {cells[0]: cells for cells in table if cells[:1] in (["train"], ["val"], ["test"])}
    assert rows["train"][1:3] == ["2", "0"] and rows["val"][1:3] == ["1", "0"] and rows["test"][1:3] == ["1", "0"]
    assert "zero or negative size: 1 [Town01_000060.xml object 1 (traffic_light)]" in printed
    assert f"verified: tree digest {datasets.DATASETS['carla'].tree_digest}" in printed
    images = {im["file_name"] for s in ("train", "val") for im in json.loads((out / f"{s}.json").read_text())["images"]}
    assert images == {f"train/{s}.png" for s in FRAMES["train"]}
    assert (out / "images" / "test" / "Town05_000060.png").is_file()


def test_a_modified_copy_is_refused_with_what_differs(source: Path, tmp_path: Path) -> None:
    (source / "images" / "test" / "Town05_000060.png").write_bytes(b"not the same")
    with pytest.raises(SystemExit) as stop:
        load_tool().main(["carla", "--output", str(tmp_path / "out"), "--from", str(source)])
    assert "the content of images/test/ differs" in str(stop.value.code)
    assert not (tmp_path / "out").exists()


def test_the_download_route_extracts_verifies_and_keeps_the_archive(source: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    record = datasets.DATASETS["carla"]
    served = tmp_path / "served.tar.gz"
    with tarfile.open(served, "w:gz") as tar:
        tar.add(source, arcname=record.archive_root)  # GitHub's archive: one top folder, repo-commit
    fetched: list[str] = []

    def fake_download(url: str, dst: str, progress: bool = True) -> None:
        fetched.append(url)
        shutil.copyfile(served, dst)

    monkeypatch.setattr(datasets, "download_url_to_file", fake_download)
    downloads, out = tmp_path / "downloads", tmp_path / "carla"
    assert load_tool().main(["carla", "--output", str(out), "--download-dir", str(downloads)]) == 0
    assert fetched == [record.archive_url]
    assert sorted(p.name for p in downloads.iterdir()) == [f"{record.archive_root}.tar.gz"]  # the extract is gone
    assert json.loads((out / "SOURCE.json").read_text())["tree_digest"] == record.tree_digest
    # A second run reuses the kept archive.
    assert load_tool().main(["carla", "--output", str(out), "--download-dir", str(downloads)]) == 0
    assert len(fetched) == 1


def test_offline_says_which_url_to_fetch_and_how_to_pass_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(url: str, dst: str, progress: bool = True) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datasets, "download_url_to_file", no_network)
    with pytest.raises(SystemExit) as stop:
        load_tool().main(["carla", "--output", str(tmp_path / "carla"), "--download-dir", str(tmp_path / "dl")])
    message = str(stop.value.code)
    assert CARLA.archive_url in message and "--from DIR" in message and "name resolution" in message
    assert f"checkout {CARLA.commit}" in message
    assert not (tmp_path / "carla").exists()


def test_offline_in_a_subprocess_exits_cleanly(tmp_path: Path) -> None:
    # No network: a proxy on a closed port refuses at once.
    env = {**os.environ, "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "fetch_dataset.py"), "carla", "--output",
                           str(tmp_path / "carla"), "--download-dir", str(tmp_path / "dl")],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 1
    assert CARLA.archive_url in done.stderr and "--from DIR" in done.stderr
    assert "Traceback" not in done.stderr

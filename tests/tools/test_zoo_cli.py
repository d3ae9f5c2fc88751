"""tools/zoo.py: the listing and the offline message, as a user sees them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAME = "ssdlite320_mobilenet_v3_large_coco"


def zoo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # An empty hub cache and no network: TORCH_HOME moves the cache; a proxy on a closed port refuses fast.
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "https_proxy": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9"}
    return subprocess.run([sys.executable, str(ROOT / "tools" / "zoo.py"), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_list_shows_each_model_with_its_cache_state(tmp_path: Path) -> None:
    done = zoo(tmp_path, "list")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith(f"| {NAME} "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "21.3" and cells[3].startswith("COCO val2017") and cells[4] == "320x320"
    assert cells[6].startswith("no (") and str(tmp_path / "torch" / "hub" / "checkpoints") in cells[6]
    # A model shipped in the package: its file size on disk, not "?" (issue #39).
    shipped = next(line for line in done.stdout.splitlines() if line.startswith("| carla_ssdlite_mobilenet_v2_pretrained "))
    cells = [c.strip() for c in shipped.strip("|").split("|")]
    assert cells[6] == "shipped" and cells[5] == "6.5"


def test_offline_download_says_what_to_fetch_and_where(tmp_path: Path) -> None:
    done = zoo(tmp_path, "download", NAME)
    assert done.returncode == 2
    assert "https://download.pytorch.org/models/ssdlite320_mobilenet_v3_large_coco-a79551df.pth" in done.stderr
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "ssdlite320_mobilenet_v3_large_coco-a79551df.pth") in done.stderr
    assert "Traceback" not in done.stderr

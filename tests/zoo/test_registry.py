"""The zoo's fetch, checksum and conversion path, on files made here (nothing can be downloaded)."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn

import detector.zoo.registry as registry
from detector.modeling.ssdlite import build_model
from detector.zoo import get_zoo_model, zoo_checkpoint, zoo_models

NAME = "ssdlite320_mobilenet_v3_large_coco"


def publish(tmp_path: Path, payload: object, name: str = "ssdlite_test-{}.pth") -> tuple[str, str]:
    """Write ``payload`` as a publisher would: sha256 prefix in the file name. Returns (file URL, prefix)."""
    staging = tmp_path / "published"
    staging.mkdir(exist_ok=True)
    tmp = staging / "upload.pth"
    torch.save(payload, tmp)
    prefix = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    final = staging / name.format(prefix)
    tmp.rename(final)
    return final.as_uri(), prefix


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hub_dir = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub_dir))
    return hub_dir


def register(monkeypatch: pytest.MonkeyPatch, url: str, prefix: str) -> None:
    entry = dataclasses.replace(zoo_models()[NAME], url=url, sha256_prefix=prefix)
    monkeypatch.setattr(registry, "_zoo", lambda: {NAME: entry})


def test_the_published_entry_is_torchvisions() -> None:
    from torchvision.models.detection import SSDLite320_MobileNet_V3_Large_Weights

    weights = SSDLite320_MobileNet_V3_Large_Weights.COCO_V1
    entry = get_zoo_model("zoo:" + NAME)
    assert entry.url == weights.url and entry.url.endswith(f"-{entry.sha256_prefix}.pth")
    assert entry.box_ap == weights.meta["_metrics"]["COCO-val2017"]["box_map"]
    assert entry.cache_path == Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def test_download_once_verify_convert_and_load(hub: Path, monkeypatch: pytest.MonkeyPatch,
                                               torchvision_ssdlite: nn.Module) -> None:
    url, prefix = publish(hub.parent, torchvision_ssdlite.state_dict())
    register(monkeypatch, url, prefix)
    checkpoint = zoo_checkpoint(NAME, progress=False)
    cached = hub / "checkpoints" / os.path.basename(url)
    assert cached.is_file()
    model = build_model(checkpoint["detector"]["config"]).eval()
    model.load_state_dict({k[len("model."):]: v for k, v in checkpoint["state_dict"].items()})
    x = torch.rand(1, 3, 320, 320) * 2 - 1
    with torch.no_grad():
        expected = torchvision_ssdlite.head(list(torchvision_ssdlite.backbone(x).values()))
    torch.testing.assert_close(model(x)[0], expected["cls_logits"], atol=1e-5, rtol=0)
    # Second use: no download (the source is gone), the cached file is used.
    Path(url.removeprefix("file://")).unlink()
    assert zoo_checkpoint(NAME, progress=False)["detector"]["label_map"]["names"][2] == "car"


def test_a_download_that_fails_the_checksum_is_refused(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, prefix = publish(hub.parent, {"w": torch.zeros(2)})
    register(monkeypatch, url, "00000000" if prefix != "00000000" else "11111111")
    with pytest.raises(ValueError, match="checksum"):
        zoo_checkpoint(NAME, progress=False)
    assert not (hub / "checkpoints" / os.path.basename(url)).exists()


def test_a_corrupt_cached_file_is_refused_by_checksum(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, prefix = publish(hub.parent, {"w": torch.zeros(2)})
    register(monkeypatch, url, prefix)
    cached = hub / "checkpoints" / os.path.basename(url)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated download")
    with pytest.raises(ValueError, match=f"corrupt or not this model.*{prefix}|{prefix}.*corrupt"):
        zoo_checkpoint(NAME, progress=False)


def test_offline_error_names_the_url_and_where_to_put_the_file(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    entry = get_zoo_model(NAME)
    with pytest.raises(FileNotFoundError) as error:
        zoo_checkpoint(NAME, progress=False)
    assert entry.url in str(error.value) and str(hub / "checkpoints" / os.path.basename(entry.url)) in str(error.value)



def test_a_pickle_payload_is_refused_without_running_it(hub: Path, monkeypatch: pytest.MonkeyPatch,
                                                         code_payload) -> None:
    marker = code_payload.marker
    url, prefix = publish(hub.parent, {"state_dict": code_payload})  # passes its own checksum
    register(monkeypatch, url, prefix)
    with pytest.raises(ValueError, match="cannot be loaded as data"):
        zoo_checkpoint(NAME, progress=False)
    assert not marker.exists()


def test_unknown_name_lists_the_zoo() -> None:
    with pytest.raises(ValueError, match=NAME):
        get_zoo_model("zoo:no_such_model")


def test_a_zoo_name_works_wherever_a_checkpoint_does(hub: Path, monkeypatch: pytest.MonkeyPatch,
                                                      torchvision_ssdlite: nn.Module, tmp_path: Path) -> None:
    import numpy as np

    from detector import Predictor, load_checkpoint

    url, prefix = publish(hub.parent, torchvision_ssdlite.state_dict())
    register(monkeypatch, url, prefix)
    model, labels = load_checkpoint("zoo:" + NAME)
    assert model.config["backbone"] == "mobilenet_v3_large" and labels.category_ids[2] == 3
    predictor = Predictor.from_checkpoint("zoo:" + NAME)
    frame = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    result = predictor.predict(frame)
    assert len(result["boxes"]) > 0 and set(result["category_ids"]) <= set(range(1, 91))
    # tools/export.py takes it too: the export carries the COCO label map.
    from detector.deploy.metadata import read_metadata
    from detector.deploy.onnx_export import export_checkpoint

    export_checkpoint("zoo:" + NAME, tmp_path / "zoo.onnx")
    assert read_metadata(tmp_path / "zoo.onnx").label_map == labels

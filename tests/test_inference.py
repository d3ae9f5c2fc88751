"""Predictor: same detections as the model on an independently built input, boxes in original pixels,
every input kind, batching, filters, the runner contract, and refused checkpoints."""
from __future__ import annotations

import argparse
import copy
import functools
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from detector import LabelMap, Predictor, build_model, load_checkpoint, save_checkpoint
from detector.data.io import ImageReadError
from detector.data.transforms import build_transforms
from detector.inference import fuse_conv_bn
from detector.modeling.boxes import scale_boxes_to_image

ROOT = Path(__file__).resolve().parents[1]
RACCOON = ROOT / ".." / "shared" / "data" / "raccoon" / "images"
SIZE = 128
LABELS = LabelMap((7, 9), ("cat", "dog"))


@functools.lru_cache(maxsize=1)
def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(num_classes=3, width_mult=0.35, image_size=SIZE)
    # Non-trivial BN statistics, so conv+BN fusion is really exercised.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def tiny_model() -> torch.nn.Module:
    """A fresh copy of one tiny random model (building one costs seconds; copying, milliseconds)."""
    return copy.deepcopy(_tiny_model())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared, loaded machine two threads
    spin against each other (10x slower here); restore the setting for other modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "m.ckpt"
    save_checkpoint(path, tiny_model(), LABELS)
    return path


@pytest.fixture(scope="module")
def predictor(ckpt: Path) -> Predictor:
    return Predictor.from_checkpoint(ckpt)


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth structure plus noise: enough for a random model to score some anchors above others."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy) % 97) * 2], -1)
    img = img + rng.integers(0, 40, (h, w, 3))
    img[h // 4: h // 2, w // 3: 2 * w // 3] = (240, 30, 30)
    return np.clip(img, 0, 255).astype(np.uint8)


def manual_input(image: np.ndarray, mean, std) -> torch.Tensor:
    """The network input computed the plain way: resize, /255, subtract mean, divide by std, CHW."""
    x = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float64) / 255.0
    x = (x - np.array(mean)) / np.array(std)
    return torch.from_numpy(x.transpose(2, 0, 1).copy()).float()[None]


def assert_same(a: dict, b: dict, atol: float = 1e-4) -> None:
    """The same detections: one-to-one, same label, id and name, score to 1e-5, box to ``atol``; both
    best first. Detections whose scores tie to float rounding may come in either order (a batch of
    one and a batch of three round differently), so they are matched, not zipped."""
    assert len(a["scores"]) == len(b["scores"])
    for d in (a, b):
        assert (np.diff(d["scores"]) <= 0).all()
        assert d["category_ids"].tolist() == [LABELS.category_ids[i - 1] for i in d["labels"].tolist()]
        assert d["names"] == [LABELS.names[i - 1] for i in d["labels"].tolist()]
    used: set[int] = set()
    for i in range(len(a["scores"])):
        close = ((b["labels"] == a["labels"][i]) & (np.abs(b["scores"] - a["scores"][i]) <= 1e-5)
                 & (np.abs(b["boxes"] - a["boxes"][i]).max(axis=1) <= atol))
        free = [j for j in np.flatnonzero(close).tolist() if j not in used]
        assert free, f"detection {i} {a['boxes'][i]} (score {a['scores'][i]:.6f}) has no match"
        used.add(free[0])


# --- equivalence with the model --------------------------------------------------------------

def test_fusion_keeps_outputs_to_1e5() -> None:
    model = tiny_model()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        ref = model(x)
        fused = fuse_conv_bn(tiny_model())
        got = fused(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)


def test_preprocess_matches_manual_and_albumentations_eval(predictor: Predictor) -> None:
    image = photo(233, 311)
    got = predictor.preprocess([image])
    assert got.shape == (1, 3, SIZE, SIZE) and got.dtype == torch.float32 and got.is_contiguous()
    torch.testing.assert_close(got, manual_input(image, predictor.mean, predictor.std), atol=1e-5, rtol=0)
    album = build_transforms("none", SIZE, train=False, mean=predictor.mean, std=predictor.std)
    ref = album(image=image, bboxes=[], labels=[])["image"]
    # Both resize with OpenCV's bilinear filter; allow one grey level of rounding.
    assert (got[0] - ref).abs().max().item() < 1.01 / 255 / min(predictor.std)


@pytest.mark.parametrize("hw", [(233, 311), (480, 200)])
def test_predict_equals_model_predict(ckpt: Path, predictor: Predictor, hw: tuple[int, int]) -> None:
    image = photo(*hw, seed=hw[0])
    model, labels = load_checkpoint(ckpt)  # unfused, independent of the Predictor's copy
    ref = model.predict(manual_input(image, model.mean, model.std), image_sizes=[hw])[0]
    got = predictor.predict(image)
    assert len(got["scores"]) > 0
    assert got["boxes"].dtype == np.float32 and got["boxes"].shape == (len(got["scores"]), 4)
    np.testing.assert_allclose(got["boxes"], ref["boxes"].numpy(), atol=1e-3)
    np.testing.assert_allclose(got["scores"], ref["scores"].numpy(), atol=1e-5)
    np.testing.assert_array_equal(got["labels"], ref["labels"].numpy())
    np.testing.assert_array_equal(got["category_ids"], [labels.category_ids[i - 1] for i in ref["labels"].tolist()])
    assert got["names"] == [labels.names[i - 1] for i in ref["labels"].tolist()]


# --- boxes land in original pixels -----------------------------------------------------------

@pytest.mark.parametrize("h,w", [(300, 500), (1000, 250), (128, 128), (77, 641)])
def test_known_box_maps_to_original_pixels(h: int, w: int) -> None:
    model = tiny_model()
    anchors = model.anchors
    j = int(((anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])).argmax()) // 2
    # The target box is [32, 16, 96, 112] xyxy in the 128x128 input: centre (64, 64), size 64 x 96.
    # SSD box coding with (10, 10, 5, 5) weights, written out so the test does not use BoxCoder.
    a = anchors[j]
    aw, ah = a[2] - a[0], a[3] - a[1]
    acx, acy = a[0] + aw / 2, a[1] + ah / 2
    code = torch.stack([10 * (64 - acx) / aw, 10 * (64 - acy) / ah, 5 * torch.log(64 / aw), 5 * torch.log(96 / ah)])

    def forward(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, num = images.shape[0], anchors.shape[0]
        logits = torch.zeros(b, num, 3)
        logits[:, :, 0] = 20.0  # background everywhere...
        logits[:, j] = torch.tensor([0.0, 0.0, 20.0])  # ...except one confident "dog"
        reg = torch.zeros(b, num, 4)
        reg[:, j] = code
        return logits, reg

    model.forward = forward
    det = Predictor.from_model(model, LABELS, score_threshold=0.5).predict(np.zeros((h, w, 3), np.uint8))
    expected = [32 * w / 128, 16 * h / 128, 96 * w / 128, 112 * h / 128]
    np.testing.assert_allclose(det["boxes"], [expected], rtol=1e-5, atol=1e-3)
    assert det["labels"].tolist() == [2] and det["category_ids"].tolist() == [9] and det["names"] == ["dog"]
    assert det["scores"][0] > 0.99


class NumpyRunner:
    """A backend of the runner contract that returns numpy arrays, mapped with the package's function."""

    image_size, mean, std, device = (64, 128), (0.5,) * 3, (0.25,) * 3, torch.device("cpu")

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, images: torch.Tensor, image_sizes=None) -> list[dict]:
        self.calls.append((tuple(images.shape), [tuple(s) for s in image_sizes]))
        assert images.dtype == torch.float32 and images.is_contiguous()
        boxes = torch.tensor([[10, 20, 50, 60], [100, 100, 140, 130]], dtype=torch.float32)  # input pixels
        return [{"boxes": scale_boxes_to_image(boxes, self.image_size, size).numpy(),
                 "scores": np.array([0.9, 0.3], np.float32), "labels": np.array([1, 2])} for size in image_sizes]


def test_runner_contract_numpy_runner_and_clipping() -> None:
    """The Predictor hands the runner one batch and each image's (h, w); a runner's numpy output in those
    pixels comes back filtered, with ids and names."""
    runner = NumpyRunner()
    p = Predictor(runner, LABELS, score_threshold=0.2)
    assert p.image_size == (64, 128) and p.mean == (0.5,) * 3
    out = p.predict_batch([np.zeros((32, 256, 3), np.uint8), np.zeros((640, 64, 3), np.uint8)])
    assert runner.calls == [((2, 3, 64, 128), [(32, 256), (640, 64)])]
    # Image 1: x * 256/128, y * 32/64; the second box is clipped to the 256 x 32 frame.
    np.testing.assert_allclose(out[0]["boxes"], [[20, 10, 100, 30], [200, 32, 256, 32]])
    np.testing.assert_allclose(out[1]["boxes"], [[5, 200, 25, 600], [50, 640, 64, 640]])
    assert out[0]["category_ids"].tolist() == [7, 9] and out[1]["names"] == ["cat", "dog"]
    assert Predictor(runner, LABELS, score_threshold=0.5).predict(np.zeros((8, 8, 3), np.uint8))["names"] == ["cat"]


# --- input kinds, batching, filters ----------------------------------------------------------

def test_path_pil_and_array_agree(tmp_path: Path, predictor: Predictor) -> None:
    image = photo(150, 220, seed=3)
    path = tmp_path / "x.png"
    Image.fromarray(image).save(path)
    by_array = predictor.predict(image)
    assert len(by_array["scores"]) > 0
    assert_same(predictor.predict(path), by_array, atol=0)
    assert_same(predictor.predict(str(path)), by_array, atol=0)
    with Image.open(path) as im:
        assert_same(predictor.predict(im), by_array, atol=0)


def test_grayscale_and_rgba_files(tmp_path: Path, predictor: Predictor) -> None:
    grey = photo(120, 160, seed=4)[..., 0]
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    rgba = np.dstack([photo(140, 100, seed=5), np.full((140, 100), 128, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    assert_same(predictor.predict(tmp_path / "g.png"), predictor.predict(np.dstack([grey] * 3)), atol=0)
    assert_same(predictor.predict(tmp_path / "a.png"), predictor.predict(np.ascontiguousarray(rgba[..., :3])), atol=0)
    assert_same(predictor.predict(grey), predictor.predict(np.dstack([grey] * 3)), atol=0)


def test_predict_batch_equals_single(predictor: Predictor) -> None:
    images = [photo(90, 300, 1), photo(256, 128, 2), photo(128, 128, 3)]
    batch = predictor.predict_batch(images)
    assert len(batch) == 3
    for image, got in zip(images, batch):
        assert_same(got, predictor.predict(image))
    assert predictor.predict_batch([]) == []


def test_score_classes_and_max_detections_filters(predictor: Predictor) -> None:
    image = photo(200, 260, seed=6)
    every = predictor.predict(image)
    assert set(every["names"]) == {"cat", "dog"}
    def variant(**options) -> Predictor:  # same network, other options: the public constructor
        return Predictor(predictor.runner, LABELS, **options)

    dogs = variant(classes=["dog"]).predict(image)
    keep = np.array(every["names"]) == "dog"
    assert dogs["names"] == ["dog"] * int(keep.sum())
    np.testing.assert_allclose(dogs["boxes"], every["boxes"][keep], atol=1e-5)
    t = float(np.median(every["scores"]))
    high = variant(score_threshold=t).predict(image)
    assert len(high["scores"]) == int((every["scores"] >= t).sum()) and (high["scores"] >= t).all()
    top3 = variant(max_detections=3).predict(image)
    np.testing.assert_allclose(top3["scores"], every["scores"][:3], atol=1e-6)
    with pytest.raises(ValueError, match="unknown class name.*'horse'"):
        variant(classes=["horse"])


def test_unreadable_file_and_bad_array(tmp_path: Path, predictor: Predictor) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        predictor.predict(bad)
    with pytest.raises(TypeError, match="uint8"):
        predictor.predict(np.zeros((10, 10, 3), np.float32))


# --- loading -----------------------------------------------------------------------------------


def test_pickle_payload_checkpoint_is_refused_without_running_it(tmp_path: Path, code_payload) -> None:
    marker = code_payload.marker
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "detector": {"config": code_payload}}, evil)
    torch.load(evil, weights_only=False)  # the payload is live: unpickled unsafely, it runs
    assert marker.read_text() == "code ran"
    marker.unlink()
    with pytest.raises(ValueError, match=r"evil\.ckpt.*weights_only=True.*refuses"):
        Predictor.from_checkpoint(evil)
    assert not marker.exists()
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        Predictor.from_checkpoint(tmp_path / "nope.ckpt")


def test_from_checkpoint_loads_an_onnx_file(ckpt: Path, tmp_path: Path) -> None:
    """An exported file loads through the ONNX runner, by suffix or, misnamed, by content (issue #20)."""
    from detector.deploy.onnx_export import export_checkpoint

    export_checkpoint(ckpt, tmp_path / "m.onnx", dynamic_batch=True, verify=False)
    (tmp_path / "m.bin").write_bytes((tmp_path / "m.onnx").read_bytes())
    image = photo(150, 220, seed=3)
    for name in ("m.onnx", "m.bin"):
        p = Predictor.from_checkpoint(tmp_path / name, num_threads=1)
        assert type(p.runner).__name__ == "OnnxRunner" and p.label_map == LABELS and p.image_size == (SIZE, SIZE)
        det = p.predict(image)
        assert len(det["scores"]) > 0 and set(det["names"]) <= {"cat", "dog"}
        assert (det["boxes"][:, 2] <= 220).all() and (det["boxes"][:, 3] <= 150).all()
    with pytest.raises(ValueError, match="exported model file.*CPU"):
        Predictor.from_checkpoint(tmp_path / "m.onnx", device="cuda")


def test_demo_video_detect_fn_uses_predictor(ckpt: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("demo_video_cli_inf", ROOT / "tools" / "demo_video.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    det = cli.build_detect_fn(ckpt, "torch", "cpu")(photo(72, 96))
    assert det["boxes"].shape[1] == 4 and len(det["names"]) == len(det["scores"]) == len(det["labels"])
    evil = tmp_path / "evil.pt"
    torch.save({"x": argparse.Namespace()}, evil)
    with pytest.raises(SystemExit, match="weights_only"):
        cli.build_detect_fn(evil, "torch", "cpu")


# --- real photos -------------------------------------------------------------------------------

@pytest.mark.skipif(not RACCOON.is_dir(), reason=f"{RACCOON} not present")
def test_real_photos_boxes_inside_each_image(predictor: Predictor) -> None:
    by_size: dict[tuple[int, int], Path] = {}
    for path in sorted(RACCOON.glob("*.jpg")):
        with Image.open(path) as im:
            by_size.setdefault(im.size, path)
        if len(by_size) == 3:
            break
    paths = list(by_size.values())
    assert len(paths) == 3
    for path, det in zip(paths, predictor.predict_batch(paths)):
        w, h = Image.open(path).size
        b = det["boxes"]
        assert len(b) > 0, path
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
        assert set(det["category_ids"].tolist()) <= {7, 9}

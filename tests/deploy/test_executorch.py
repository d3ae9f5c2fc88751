"""ExecuTorch export (XNNPACK): the fp32 program against PyTorch (raw outputs, and detections through
ExecuTorchRunner against TorchRunner), the int8 program against fp32, the sidecar, the errors.

One fp32 and one int8 export of a small model (width 0.35, 128 px) serve every test: lowering to
XNNPACK is the slow part (tens of seconds each)."""
from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_convert

pytest.importorskip("executorch")

from detector import LabelMap, build_model  # noqa: E402
from detector.data.synthetic import SyntheticConfig, render_image  # noqa: E402
from detector.deploy.executorch_export import (  # noqa: E402
    export_executorch,
    read_detector_sidecar,
    sidecar_path,
)
from detector.deploy.executorch_runtime import ExecuTorchRunner, load_executorch_runner  # noqa: E402
from detector.deploy.preprocess import ImagePreprocessor  # noqa: E402
from detector.inference import TorchRunner  # noqa: E402

SIZE = 128
SYNTH = SyntheticConfig(image_size=160, min_size=24, small_fraction=0.0, clutter=4)  # resized to 128 on input
LABELS = LabelMap((3, 5, 9), ("circle", "square", "triangle"))


def make_model() -> torch.nn.Module:
    """Random weights made informative enough to rank: non-trivial BatchNorm statistics (folded by the
    export) and class logits spread 8x, so scores are far apart compared with float rounding."""
    torch.manual_seed(0)
    model = build_model(num_classes=LABELS.num_classes, width_mult=0.35, image_size=SIZE, score_threshold=0.3,
                        max_detections=40)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():
        for block in model.head.cls_heads:
            block[-1].weight.mul_(8.0)
    return model.eval()


def frames(n: int, seed: int) -> list[np.ndarray]:
    return [render_image(np.random.default_rng([seed, i]), SYNTH)[0] for i in range(n)]


def normalised(images: list[np.ndarray], model: torch.nn.Module) -> torch.Tensor:
    return ImagePreprocessor(SIZE, model.mean, model.std)(images)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("executorch")
    calibration = root / "calibration"
    calibration.mkdir()
    for i, image in enumerate(frames(8, seed=0)):
        Image.fromarray(image).save(calibration / f"{i}.png")
    model = make_model()
    fp32 = export_executorch(model, LABELS, root / "model.pte")
    int8 = export_executorch(model, LABELS, root / "model.int8.pte", int8=True, calibration_images=calibration)
    return {"model": model, "fp32": fp32, "int8": int8}


def test_fp32_program_matches_pytorch(exported) -> None:
    """Raw outputs of the program equal PyTorch's to float rounding; everything runs in XNNPACK."""
    model, result = exported["model"], exported["fp32"]
    assert result.undelegated_ops == {} and result.delegated_ops > 100
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    runner = load_executorch_runner(result.path)
    x = normalised(frames(3, seed=7), model)
    got = runner.run(x)
    with torch.no_grad():
        expected = model(x)
    for a, b in zip(got, expected):
        assert a.shape == b.shape == (3, *b.shape[1:])
        assert float((a - b).abs().max()) < 1e-4 * float(b.abs().max())


def test_runner_detections_equal_torch_runner(exported) -> None:
    """Same detections as TorchRunner on a batch of 3, boxes mapped to three other image sizes."""
    model, result = exported["model"], exported["fp32"]
    runner = load_executorch_runner(result.path)
    reference = TorchRunner(copy.deepcopy(model), fuse=False, channels_last=False)
    x = normalised(frames(3, seed=11), model)
    sizes = [(240, 320), (128, 128), (97, 300)]
    got, expected = runner(x, sizes), reference(x, sizes)
    assert sum(len(d["boxes"]) for d in expected) >= 10  # enough detections to compare
    for g, e in zip(got, expected, strict=True):
        assert torch.equal(g["labels"], e["labels"])
        torch.testing.assert_close(g["scores"], e["scores"], rtol=0, atol=1e-5)
        torch.testing.assert_close(g["boxes"], e["boxes"], rtol=0, atol=1e-3)
    assert (runner.image_size, runner.mean, runner.std) == (reference.image_size, reference.mean, reference.std)
    assert runner.device == torch.device("cpu")


def test_int8_program_tracks_fp32(exported) -> None:
    """The int8 program is about 4x smaller, all XNNPACK, and its outputs follow fp32 on unseen images."""
    model, fp32, int8 = exported["model"], exported["fp32"], exported["int8"]
    assert int8.int8 and int8.calibration_images == 8
    assert int8.undelegated_ops == {}
    assert int8.size_bytes < 0.45 * fp32.size_bytes  # measured: 0.34 (the graph and biases stay 32-bit)
    x = normalised(frames(4, seed=23), model)
    got = load_executorch_runner(int8.path).run(x)
    with torch.no_grad():
        expected = model(x)
    for a, b in zip(got, expected):
        corr = float(torch.corrcoef(torch.stack((a.flatten(), b.flatten())))[0, 1])
        rel = float((a - b).abs().mean() / b.abs().mean())
        assert corr > 0.995 and rel < 0.1, (corr, rel)  # measured: 0.9999, 0.015


def test_sidecar_round_trip(exported) -> None:
    for key in ("fp32", "int8"):
        result = exported[key]
        path = sidecar_path(result.path)
        assert path == result.sidecar and path.name == result.path.name + ".json"
        document = json.loads(path.read_text())
        assert document["runtime"] == "executorch" and document["backend"] == "xnnpack"
        assert document["program"] == result.path.name
        assert document["input"] == {"name": "images", "shape": [1, 3, SIZE, SIZE], "dtype": "float32"}
        info = read_detector_sidecar(result.path)
        assert info == result.info
        anchors = box_convert(torch.tensor(document["anchors_cxcywh"]), "cxcywh", "xyxy")
        torch.testing.assert_close(anchors, info.anchors(), rtol=0, atol=1e-3)  # what an app decodes against
        assert info.to_metadata().items() <= document.items()  # the ONNX metadata, key for key
        assert info.label_map == LABELS and info.image_size == (SIZE, SIZE) and not info.with_nms
        assert info.int8 is (key == "int8")
        if key == "int8":
            assert info.quantization["calibration_images"] == 8
            assert "per-channel" in info.quantization["weights"]
        runner = load_executorch_runner(result.path, score_threshold=0.5, max_detections=7)
        assert runner.info.label_map == LABELS
        assert (runner.score_threshold, runner.max_detections) == (0.5, 7)


def test_errors_name_the_file(exported, tmp_path: Path) -> None:
    source = exported["fp32"].path
    missing = tmp_path / "absent.pte"
    with pytest.raises(FileNotFoundError, match="absent.pte"):
        load_executorch_runner(missing)

    program = tmp_path / "model.pte"
    shutil.copy(source, program)
    with pytest.raises(FileNotFoundError, match="model.pte.json"):
        load_executorch_runner(program)

    sidecar = sidecar_path(program)
    sidecar.write_text("{not json")
    with pytest.raises(ValueError, match="model.pte.json.*not a valid JSON"):
        load_executorch_runner(program)

    document = json.loads(sidecar_path(source).read_text())
    sidecar.write_text(json.dumps({k: v for k, v in document.items() if k != "runtime"}))
    with pytest.raises(ValueError, match="not an ExecuTorch export"):
        load_executorch_runner(program)

    sidecar.write_text(json.dumps({**document, "program_sha256": "0" * 64}))
    with pytest.raises(ValueError, match="another program"):
        load_executorch_runner(program)

    sidecar.write_text(json.dumps({k: v for k, v in document.items() if k != "detector_format"}))
    with pytest.raises(ValueError, match="model.pte.json.*no detector metadata"):
        load_executorch_runner(program)

    sidecar.write_text(json.dumps({**document, "image_size": "big"}))
    with pytest.raises(ValueError, match="model.pte.json.*unreadable"):
        load_executorch_runner(program)

    not_a_program = tmp_path / "text.pte"
    not_a_program.write_text("hello")
    sidecar_path(not_a_program).write_text(json.dumps({k: v for k, v in document.items() if k != "program_sha256"}))
    with pytest.raises(ValueError, match="text.pte: not a loadable ExecuTorch program"):
        load_executorch_runner(not_a_program)


def test_runner_checks_inputs_and_metadata(exported) -> None:
    runner = load_executorch_runner(exported["fp32"].path)
    with pytest.raises(ValueError, match=r"expected images \[B, 3, 128, 128\]"):
        runner(torch.zeros(1, 3, 64, 64))
    info = read_detector_sidecar(exported["fp32"].path)
    with pytest.raises(ValueError, match="takes"):
        ExecuTorchRunner(runner.method, replace(info, image_size=(96, 96)))
    with pytest.raises(ValueError, match="raw outputs"):
        ExecuTorchRunner(runner.method, replace(info, with_nms=True))


def test_int8_needs_calibration_images() -> None:
    with pytest.raises(ValueError, match="calibration images"):
        export_executorch(make_model(), LABELS, "unused.pte", int8=True)


def test_predictor_and_eval_take_a_program_file(exported, tmp_path) -> None:
    """``Predictor.from_checkpoint`` / ``load_runner`` pick ExecuTorch for a ``.pte`` (the user's
    threshold reaches the runner's candidates), and tools/eval.py scores it like the PyTorch model."""
    import importlib.util

    from detector import Predictor, save_checkpoint
    from detector.inference import load_runner

    model, result = exported["model"], exported["fp32"]
    image = frames(1, seed=31)[0]
    predictor = Predictor.from_checkpoint(result.path, score_threshold=0.2)
    assert isinstance(predictor.runner, ExecuTorchRunner) and predictor.runner.score_threshold == 0.2
    expected = Predictor.from_model(copy.deepcopy(model), LABELS, fuse=False, score_threshold=0.2).predict(image)
    got = predictor.predict(image)
    assert len(expected["scores"]) > 0 and got["names"] == expected["names"]
    np.testing.assert_allclose(got["boxes"], expected["boxes"], atol=1e-3)
    runner, label_map = load_runner(result.path)
    assert isinstance(runner, ExecuTorchRunner) and label_map == LABELS
    with pytest.raises(ValueError, match="exported model file.*CPU"):
        Predictor.from_checkpoint(result.path, device="cuda")

    images = tmp_path / "images"
    images.mkdir()
    entries, annotations = [], []
    for i, (picture, objects) in enumerate(render_image(np.random.default_rng([41, i]), SYNTH) for i in range(4)):
        Image.fromarray(picture).save(images / f"{i}.png")
        entries.append({"id": i + 1, "file_name": f"{i}.png", "width": picture.shape[1], "height": picture.shape[0]})
        # The five shapes onto this model's three category ids.
        annotations += [{"id": len(annotations) + k + 1, "image_id": i + 1, "bbox": o["bbox"], "iscrowd": 0,
                         "category_id": LABELS.category_ids[(o["category_id"] - 1) % 3],
                         "area": o["bbox"][2] * o["bbox"][3]} for k, o in enumerate(objects)]
    categories = [{"id": c, "name": n} for c, n in zip(LABELS.category_ids, LABELS.names)]
    (tmp_path / "gt.json").write_text(json.dumps({"images": entries, "annotations": annotations,
                                                  "categories": categories}))
    save_checkpoint(tmp_path / "model.ckpt", model, LABELS)
    spec = importlib.util.spec_from_file_location("tools_eval_pte", Path(__file__).parents[2] / "tools" / "eval.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    metrics = {}
    for name, path in (("pte", result.path), ("ckpt", tmp_path / "model.ckpt")):
        out = tmp_path / name / "metrics.json"
        assert tool.main(["--checkpoint", str(path), "--images", str(images), "--annotations", str(tmp_path / "gt.json"),
                          "--output", str(out), "--num-workers", "0", "--device", "cpu"]) == 0
        metrics[name] = json.loads(out.read_text())
    assert metrics["pte"]["num_detections"] == metrics["ckpt"]["num_detections"] > 0
    assert abs(metrics["pte"]["AP"] - metrics["ckpt"]["AP"]) < 1e-3

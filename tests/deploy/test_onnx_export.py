"""ONNX export: ONNX Runtime against PyTorch on real photos and synthetic frames (raw outputs within float32
rounding of a float64 evaluation, at the default BatchNorm eps;
the same detections with and without NMS in the graph, batch 1 and 4), the NMS node against
ONNX Runtime's own, metadata, re-export at another size, other necks and widths, int8."""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torchvision.ops import box_iou

from detector import LabelMap, Predictor, build_model, save_checkpoint
from detector.data.io import load_image
from detector.data.synthetic import CLASSES, SyntheticConfig, render_image
from detector.deploy.metadata import read_metadata
from detector.deploy.onnx_export import (
    NmsExportModule,
    export_onnx,
    multiclass_nms,
    resize_model,
)
from detector.deploy.onnx_runtime import create_session, load_onnx_runner
from detector.deploy.quantize import quantize_onnx
from detector.modeling.ssdlite import DEFAULTS
from tests.deploy.int8_checks import BREAKAGES, MAX_MEAN_ERROR_STEPS, broken_copy, mean_error_in_steps, output_steps

ROOT = Path(__file__).resolve().parents[2]  # the repository
RACCOON = ROOT / ".." / "shared" / "data" / "raccoon" / "images"
SIZE = 128
SYNTH = SyntheticConfig(image_size=SIZE, min_size=24, small_fraction=0.0, clutter=4)
LABELS = LabelMap(tuple(range(1, len(CLASSES) + 1)), CLASSES)
SCORE_THRESHOLD = 0.1  # leaves tens of detections per image on the briefly trained model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def normalise(images: list[np.ndarray], mean, std, size: int = SIZE) -> torch.Tensor:
    """The network input computed the plain way: resize, /255, minus mean, over std, NCHW."""
    batch = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in images])
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
    return ((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)).contiguous()


def synthetic_frames(n: int, seed: int) -> list[tuple[np.ndarray, list[dict]]]:
    return [render_image(np.random.default_rng([seed, i]), SYNTH) for i in range(n)]


def raccoon_photos(n: int) -> list[np.ndarray]:
    if not RACCOON.is_dir():
        pytest.skip(f"{RACCOON} is absent")
    return [load_image(p) for p in sorted(RACCOON.glob("*.jpg"))[:n]]


@functools.lru_cache(maxsize=1)
def _trained() -> torch.nn.Module:
    """A width-0.35, 128 px model trained 30 steps on 16 synthetic frames: random weights give
    near-uniform scores, this gives anchors that clearly win and a moderate number of detections."""
    torch.manual_seed(0)
    model = build_model(num_classes=LABELS.num_classes, width_mult=0.35, image_size=SIZE,
                        score_threshold=SCORE_THRESHOLD)  # the default BatchNorm eps
    frames = synthetic_frames(16, seed=0)
    x = normalise([f for f, _ in frames], model.mean, model.std)
    targets = []
    for _, objects in frames:
        boxes = [[o["bbox"][0], o["bbox"][1], o["bbox"][0] + o["bbox"][2], o["bbox"][1] + o["bbox"][3]] for o in objects]
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                        "labels": torch.tensor([o["category_id"] for o in objects], dtype=torch.int64)})
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(30):
        idx = [(step * 8 + j) % 16 for j in range(8)]
        loss = model.compute_loss(x[idx], [targets[i] for i in idx])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # 30 steps leave BN running statistics far from the data's: re-estimate them on the set.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model(x)
    return model.eval()


def trained() -> torch.nn.Module:
    return copy.deepcopy(_trained())


def random_model(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(num_classes=3, image_size=SIZE, **kwargs)
    for m in model.modules():  # non-trivial BN statistics: the exporter folds them into the convs
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("onnx")
    model = trained()
    paths = {"raw": out / "raw.onnx", "nms": out / "nms.onnx", "static": out / "static.onnx"}
    export_onnx(model, LABELS, paths["raw"], dynamic_batch=True)
    export_onnx(model, LABELS, paths["nms"], dynamic_batch=True, with_nms=True)
    export_onnx(model, LABELS, paths["static"])
    return paths


def inputs(source: str, batch: int) -> torch.Tensor:
    model = _trained()
    images = raccoon_photos(batch) if source == "real" else [f for f, _ in synthetic_frames(batch, seed=7)]
    return normalise(images, model.mean, model.std)


def assert_faithful(ort_outputs: list[np.ndarray], module: torch.nn.Module, x: torch.Tensor) -> None:
    """ONNX Runtime's outputs are as close to a float64 evaluation of ``module`` as PyTorch's own float32 ones.

    The tolerance is float32 rounding, measured: a briefly trained model at the default BatchNorm eps
    (1e-3) has near-constant channels that BN divides by sqrt(var + eps), so PyTorch itself drifts up
    to ~5e-5 from float64 here, and ONNX Runtime (other kernels, folded BN) by as much again in the
    other direction. An export fault (a wrong eps, a missed fold, another resize) moves outputs by
    1e-2 or more. So: ORT's error against float64 at most 3x PyTorch's (plus 1e-6 for outputs that
    round to nothing), and |ORT - PyTorch| < 2e-4.
    """
    with torch.no_grad():
        torch32 = [t.numpy() for t in module(x)]
        torch64 = [t.numpy() for t in copy.deepcopy(module).double()(x.double())]
    for ort, t32, t64 in zip(ort_outputs, torch32, torch64):
        assert ort.shape == t32.shape
        torch_error, ort_error = np.abs(t32 - t64).max(), np.abs(ort - t64).max()
        assert ort_error <= 3 * torch_error + 1e-6, (ort_error, torch_error)
        np.testing.assert_allclose(ort, t32, rtol=0, atol=2e-4)


def assert_same_detections(ref: dict, got: dict) -> None:
    """Same count; a one-to-one match with the same label, IoU > 0.99 and |score diff| < 1e-3."""
    ref_boxes, got_boxes = torch.as_tensor(ref["boxes"]), torch.as_tensor(got["boxes"])
    assert len(ref_boxes) == len(got_boxes)
    if len(ref_boxes) == 0:
        return
    ok = ((box_iou(ref_boxes, got_boxes) > 0.99)
          & (torch.as_tensor(ref["labels"])[:, None] == torch.as_tensor(got["labels"])[None])
          & ((torch.as_tensor(ref["scores"])[:, None] - torch.as_tensor(got["scores"])[None]).abs() < 1e-3))
    used: set[int] = set()
    for i in range(len(ref_boxes)):
        free = [j for j in ok[i].nonzero().flatten().tolist() if j not in used]
        assert free, f"detection {i} ({ref_boxes[i].tolist()}, score {float(ref['scores'][i]):.4f}) has no match"
        used.add(free[0])


# --- the NMS node ---------------------------------------------------------------------------------


def test_multiclass_nms_equals_onnxruntime_nonmaxsuppression():
    """The torch-side forward of the exported NMS and ONNX Runtime's operator give the same triples."""
    g = torch.Generator().manual_seed(3)
    batch, classes, n = 2, 3, 60
    xy = torch.rand(batch, n, 2, generator=g) * 80
    wh = torch.rand(batch, n, 2, generator=g) * 40 + 5
    boxes = torch.cat((xy, xy + wh), dim=-1)  # clustered: plenty of overlaps to suppress
    scores = torch.rand(batch, classes, n, generator=g)
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou", "thr"], ["selected"],
                            center_point_box=0)
    graph = helper.make_graph(
        [node], "nms",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, n, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, classes, n])],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3])],
        [helper.make_tensor("max_out", TensorProto.INT64, [1], [7]),
         helper.make_tensor("iou", TensorProto.FLOAT, [1], [0.45]),
         helper.make_tensor("thr", TensorProto.FLOAT, [1], [0.2])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    expected = session.run(None, {"boxes": boxes.numpy(), "scores": scores.numpy()})[0]
    got = multiclass_nms(boxes, scores, 7, 0.45, 0.2).numpy()
    assert len(expected) > 10 and np.bincount(expected[:, 0] * classes + expected[:, 1]).max() == 7  # the cap bit
    np.testing.assert_array_equal(got, expected)


# --- parity ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("source", ["real", "synthetic"])
def test_raw_outputs_match_pytorch(exported, source, batch):
    x = inputs(source, batch)
    session = create_session(exported["raw"], num_threads=1)
    assert_faithful(session.run(None, {"images": x.numpy()}), _trained(), x)


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("source", ["real", "synthetic"])
@pytest.mark.parametrize("graph", ["raw", "nms"])
def test_detections_match_pytorch(exported, graph, source, batch):
    x = inputs(source, batch)
    reference = _trained().predict(x)  # the PostProcessor on PyTorch outputs
    runner = load_onnx_runner(exported[graph], num_threads=1)
    got = runner(x)
    assert len(got) == batch
    counts = [len(r["boxes"]) for r in reference]
    assert min(counts) >= 4 and max(counts) < 100, counts  # a meaningful comparison: detections, not all
    for ref, det in zip(reference, got):
        assert_same_detections(ref, det)
        assert (det["labels"] >= 1).all() and (det["labels"] <= len(CLASSES)).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()


def test_traced_nms_module_matches_postprocessor_and_its_onnx_graph(exported):
    """The module the exporter traces gives the PostProcessor's detections, and ORT gives its outputs."""
    x = inputs("synthetic", 4)
    model = _trained()
    with torch.no_grad():
        boxes, scores, labels, counts = NmsExportModule(model).eval()(x)
    for b, ref in enumerate(model.predict(x)):
        n = int(counts[b])
        assert_same_detections(ref, {"boxes": boxes[b, :n], "scores": scores[b, :n], "labels": labels[b, :n]})
        assert (labels[b, n:] == 0).all() and (scores[b, n:] == 0).all() and (boxes[b, n:] == 0).all()
    ort_out = create_session(exported["nms"], num_threads=1).run(None, {"images": x.numpy()})
    np.testing.assert_array_equal(ort_out[3], counts.numpy())
    np.testing.assert_array_equal(ort_out[2], labels.numpy())
    # From assert_faithful's 2e-4 on the raw outputs: a softmax moves by at most 1/4 of the change of a
    # logit difference (< 4e-4), and a box side by 2e-4 / 5 of its anchor's side (< 2 x 128 px).
    np.testing.assert_allclose(ort_out[1], scores.numpy(), atol=1e-4)
    np.testing.assert_allclose(ort_out[0], boxes.numpy(), atol=1e-2)


def test_fixed_batch_graph_is_fed_in_chunks(exported):
    session = create_session(exported["static"], num_threads=1)
    assert session.get_inputs()[0].shape == [1, 3, SIZE, SIZE]
    x = inputs("synthetic", 4)
    fixed = load_onnx_runner(exported["static"], num_threads=1)(x)
    dynamic = load_onnx_runner(exported["raw"], num_threads=1)(x)
    for a, b in zip(dynamic, fixed):
        assert_same_detections(a, b)


@pytest.mark.parametrize("graph", ["raw", "nms"])
def test_predictor_from_onnx_matches_checkpoint_predictor(exported, tmp_path, graph):
    """From the .onnx alone: same detections in each photo's own pixels, with the user's ids and names."""
    photos = raccoon_photos(3) + [f for f, _ in synthetic_frames(2, seed=11)]
    save_checkpoint(tmp_path / "m.ckpt", _trained(), LABELS)
    torch_predictor = Predictor.from_checkpoint(tmp_path / "m.ckpt", score_threshold=0.2)
    onnx_predictor = Predictor.from_checkpoint(exported[graph], score_threshold=0.2, num_threads=1)
    assert onnx_predictor.image_size == (SIZE, SIZE) and onnx_predictor.mean == torch_predictor.mean
    for photo, ref, got in zip(photos, torch_predictor.predict_batch(photos), onnx_predictor.predict_batch(photos)):
        assert len(ref["scores"]) > 0  # something to compare, on every photo
        assert_same_detections(ref, got)
        h, w = photo.shape[:2]
        assert (got["boxes"][:, 2] <= w).all() and (got["boxes"][:, 3] <= h).all()
        assert got["names"] == [CLASSES[c - 1] for c in got["category_ids"]]


# --- metadata, sizes, architectures ---------------------------------------------------------------


def test_metadata_round_trip_and_anchors_rebuilt_exactly(exported):
    model = _trained()
    for graph, with_nms in (("raw", False), ("nms", True)):
        info = read_metadata(exported[graph])
        assert info.label_map == LABELS and info.with_nms is with_nms and not info.int8
        assert info.image_size == (SIZE, SIZE)
        assert info.mean == model.mean and info.std == model.std
        assert info.config["width_mult"] == 0.35 and info.config["num_classes"] == len(CLASSES) + 1
        assert info.postprocess == {"score_threshold": SCORE_THRESHOLD, "nms_threshold": 0.55,
                                    "topk_candidates": 300, "max_detections": 100, "classification": "softmax"}
        assert torch.equal(info.anchors(), model.anchors)
    outputs = [o.name for o in onnx.load(str(exported["nms"])).graph.output]
    assert outputs == ["boxes", "scores", "labels", "num_detections"]
    assert any(n.op_type == "NonMaxSuppression" for n in onnx.load(str(exported["nms"])).graph.node)


def test_reexport_at_another_size(tmp_path):
    model = trained()
    result = export_onnx(model, LABELS, tmp_path / "m160.onnx", image_size=160, dynamic_batch=True)
    assert model.image_size == (SIZE, SIZE)  # the caller's model is untouched
    info = read_metadata(result.path)
    assert info.image_size == (160, 160)
    expected_anchors = build_model(num_classes=LABELS.num_classes, width_mult=0.35, image_size=160).anchors
    assert torch.equal(info.anchors(), expected_anchors) and result.num_anchors == len(expected_anchors) != 330
    resized = resize_model(model, 160)
    for key, value in model.state_dict().items():
        assert torch.equal(resized.state_dict()[key], value)
    images = [f for f, _ in synthetic_frames(2, seed=5)]
    x = normalise(images, model.mean, model.std, size=160)
    assert_faithful(create_session(result.path, num_threads=1).run(None, {"images": x.numpy()}), resized, x)
    for ref, got in zip(resized.predict(x), load_onnx_runner(result.path, num_threads=1)(x)):
        assert_same_detections(ref, got)


@pytest.mark.skipif("anchor_order" not in DEFAULTS, reason="no anchor_order option in this version")
def test_every_anchor_option_reaches_the_onnx_runner(tmp_path):
    """The runner rebuilds anchors through the model's own builder: options added to the recipe follow."""
    model = random_model(width_mult=0.35, anchor_order="torchvision", clip_anchors=True)
    assert not torch.equal(model.anchors, random_model(width_mult=0.35).anchors)  # the options matter
    result = export_onnx(model, LabelMap((1, 2), ("a", "b")), tmp_path / "a.onnx", verify=False)
    runner = load_onnx_runner(result.path, num_threads=1)
    assert torch.equal(runner.anchors, model.anchors)


def test_the_models_view_of_wide_frames_travels_in_the_export(tmp_path):
    """A recorded view (issue #38: slice frames at least 2.5:1) reaches the Predictor of the .onnx."""
    from detector.inference import Predictor
    from detector.slicing import FrameView, Slicing

    view = FrameView(slicing=Slicing(overlap=0.25), slice_min_aspect=2.5)
    model = random_model(width_mult=0.35, view=view.to_config())
    result = export_onnx(model, LabelMap((1, 2), ("a", "b")), tmp_path / "v.onnx", verify=False)
    assert Predictor.from_onnx(result.path).view == view
    assert Predictor.from_onnx(result.path, slicing=None).view == FrameView()


def test_stride8_level_exports_and_its_anchors_reach_the_runner(tmp_path):
    """A seven-level model exports; the runner rebuilds its 7-level anchors from the metadata alone."""
    model = random_model(width_mult=0.35, stride8_level=True)
    assert model.feature_sizes[0] == (SIZE // 8, SIZE // 8)
    result = export_onnx(model, LabelMap((1, 2), ("a", "b")), tmp_path / "s8.onnx", verify=False)
    runner = load_onnx_runner(result.path, num_threads=1)
    assert torch.equal(runner.anchors, model.anchors) and torch.equal(runner.anchor_levels, model.anchor_levels)
    x = normalise([f for f, _ in synthetic_frames(1, seed=4)], model.mean, model.std)
    ort_cls, ort_box = create_session(result.path, num_threads=1).run(None, {"images": x.numpy()})
    with torch.no_grad():
        cls_logits, bbox_regression = model(x)
    np.testing.assert_allclose(ort_cls, cls_logits.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(ort_box, bbox_regression.numpy(), rtol=0, atol=1e-4)


@pytest.mark.skipif("topk_per" not in DEFAULTS, reason="no topk_per option in this version")
def test_nms_graph_refuses_post_processing_it_does_not_implement(tmp_path):
    """The in-graph NMS does top-k per class and keeps every box size: any other setting is refused,
    not exported as a graph that decodes otherwise than the model; the raw graph carries it exactly."""
    model = random_model(width_mult=0.35, topk_per="level", min_box_size=2.0)
    with pytest.raises(ValueError, match="topk_per.*without --with-nms"):
        export_onnx(model, LabelMap((1, 2), ("a", "b")), tmp_path / "n.onnx", with_nms=True, verify=False)
    assert not (tmp_path / "n.onnx").exists()
    raw = export_onnx(model, LabelMap((1, 2), ("a", "b")), tmp_path / "r.onnx", verify=False)
    pp = load_onnx_runner(raw.path, num_threads=1).post_processor
    assert (pp.topk_per, pp.min_box_size) == ("level", 2.0)


@pytest.mark.parametrize("neck,width", [("fpn", 0.35), ("ssdlite", 0.75)])
def test_other_necks_and_widths_export(tmp_path, neck, width):
    model = random_model(neck=neck, width_mult=width)
    x = normalise([f for f, _ in synthetic_frames(2, seed=9)], model.mean, model.std)
    raw = export_onnx(model, LabelMap((1, 2), ("a", "b")), tmp_path / "raw.onnx", dynamic_batch=True)
    assert read_metadata(raw.path).config["neck"] == neck
    ort_cls, ort_box = create_session(raw.path, num_threads=1).run(None, {"images": x.numpy()})
    with torch.no_grad():
        cls_logits, bbox_regression = model(x)
    np.testing.assert_allclose(ort_cls, cls_logits.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(ort_box, bbox_regression.numpy(), rtol=0, atol=1e-4)
    # With NMS too: random weights score every anchor alike, so check the graph's contract only.
    nms = export_onnx(model, LabelMap((1, 2), ("a", "b")), tmp_path / "nms.onnx", dynamic_batch=True, with_nms=True)
    boxes, scores, labels, counts = create_session(nms.path, num_threads=1).run(None, {"images": x.numpy()})
    assert boxes.shape == (2, 100, 4) and scores.shape == labels.shape == (2, 100) and counts.shape == (2,)
    for b in range(2):
        n = int(counts[b])
        assert ((labels[b, :n] >= 1) & (labels[b, :n] <= 2)).all() and (labels[b, n:] == 0).all()
        assert (boxes[b, :n] >= 0).all() and (boxes[b, :n] <= SIZE).all()


# --- int8 and errors ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8(exported: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The raw and the NMS graph quantized on the same 12 calibration frames."""
    out = tmp_path_factory.mktemp("int8")
    calib = out / "calib"
    calib.mkdir()
    for i, (frame, _) in enumerate(synthetic_frames(16, seed=21)):
        cv2.imwrite(str(calib / f"{i:03d}.jpg"), frame[..., ::-1])
    paths = {}
    for graph in ("raw", "nms"):
        result = quantize_onnx(exported[graph], out / f"{graph}.int8.onnx", calib, calibration_count=12)
        assert result.calibration_images == 12
        paths[graph] = result.path
    return paths


def test_int8_quantization_is_qdq_per_channel_with_float_post_processing(int8):
    info = read_metadata(int8["nms"])
    assert info.int8 and info.quantization["weights"] == "int8 per-channel" and info.label_map == LABELS

    proto = onnx.load(str(int8["nms"]))
    producers = {o: n for n in proto.graph.node for o in n.output}
    inits = {t.name: t for t in proto.graph.initializer}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert len(convs) > 50
    for conv in convs:
        dq = producers[conv.input[1]]  # the weight comes through a DequantizeLinear ...
        assert dq.op_type == "DequantizeLinear"
        weight, scale = inits[dq.input[0]], inits[dq.input[1]]
        assert weight.data_type == TensorProto.INT8
        assert list(scale.dims) == [weight.dims[0]]  # ... with one scale per output channel
        act = producers[conv.input[0]] if conv.input[0] in producers else None
        assert act is not None and act.op_type == "DequantizeLinear"  # activations quantized too
    # Decoding and NMS stay float: no QuantizeLinear reads a post-processing tensor.
    for q in (n for n in proto.graph.node if n.op_type == "QuantizeLinear"):
        src = producers.get(q.input[0])
        assert src is None or not src.name.startswith("/postprocess/"), src.name


def test_int8_raw_outputs_within_a_few_quantisation_steps_of_fp32(exported, int8):
    """Mean |int8 - fp32| of each raw output, in units of that output's quantisation step (int8_checks
    explains why this and not a count of surviving detections)."""
    x = inputs("synthetic", 4)
    fp32 = load_onnx_runner(exported["raw"], num_threads=1).run(x)
    errors = mean_error_in_steps(load_onnx_runner(int8["raw"], num_threads=1).run(x), fp32, output_steps(int8["raw"]))
    assert 0 < max(errors) <= MAX_MEAN_ERROR_STEPS, errors


def test_int8_nms_graph_decodes_its_int8_outputs_in_float_exactly(int8):
    """The int8 NMS graph's detections are the PostProcessor's on the int8 network's raw outputs: the
    quantized network is the same in both files and the decoding and NMS after it are not quantized."""
    x = inputs("synthetic", 4)
    cls_logits, bbox_regression = load_onnx_runner(int8["raw"], num_threads=1).run(x)
    reference = _trained().postprocess(torch.from_numpy(cls_logits), torch.from_numpy(bbox_regression))
    got = load_onnx_runner(int8["nms"], num_threads=1)(x)
    assert sum(len(r["boxes"]) for r in reference) >= 8
    for ref, det in zip(reference, got):
        assert_same_detections(ref, det)


@pytest.mark.parametrize("layers", ["all", "one"])
@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_int8_error_bound_fails_for_broken_exports(exported, int8, tmp_path, breakage, layers):
    """The bound of the test above rejects a wrong scale, shuffled channels and a dropped
    DequantizeLinear, in every conv or in one head conv."""
    x = inputs("synthetic", 4)
    fp32 = load_onnx_runner(exported["raw"], num_threads=1).run(x)
    broken = broken_copy(int8["raw"], breakage, layers, tmp_path / "broken.int8.onnx")
    errors = mean_error_in_steps(load_onnx_runner(broken, num_threads=1).run(x), fp32, output_steps(int8["raw"]))
    assert max(errors) > MAX_MEAN_ERROR_STEPS, errors


def test_files_that_are_not_detector_exports_are_refused(tmp_path):
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "x.onnx"))
    with pytest.raises(ValueError, match="export it with tools/export.py"):
        Predictor.from_onnx(tmp_path / "x.onnx", num_threads=1)
    with pytest.raises(FileNotFoundError):
        Predictor.from_checkpoint(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(random_model(width_mult=0.35), LABELS, tmp_path / "y.onnx", opset=9)

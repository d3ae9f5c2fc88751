"""PostProcessor: vectorised decode + top-k + batched NMS, against a plain per-image, per-class loop."""
import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.ops import nms

from detector.modeling.anchors import DefaultBoxGenerator
from detector.modeling.boxes import BoxCoder
from detector.modeling.postprocess import PostProcessor

INPUT = (96, 96)
SIZES = [(480, 640), (96, 96), (120, 50)]


def reference(cls_logits, bbox_regression, anchors, image_sizes, score_threshold, nms_threshold, topk, max_det,
              classification="softmax"):
    """The obvious implementation: per image, per class, with torchvision.ops.nms."""
    coder = TVBoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    in_h, in_w = INPUT
    results = []
    for b in range(cls_logits.shape[0]):
        if classification == "softmax":
            probs = torch.softmax(cls_logits[b], dim=-1)
        else:
            probs = torch.sigmoid(cls_logits[b])
        decoded = coder.decode_single(bbox_regression[b], anchors)
        decoded[:, 0::2] = decoded[:, 0::2].clamp(0, in_w)
        decoded[:, 1::2] = decoded[:, 1::2].clamp(0, in_h)
        boxes, scores, labels = [], [], []
        for c in range(1, cls_logits.shape[-1]):
            s, idx = probs[:, c].topk(min(topk, len(anchors)))
            keep = s > score_threshold
            s, idx = s[keep], idx[keep]
            kept = nms(decoded[idx], s, nms_threshold)
            boxes.append(decoded[idx][kept])
            scores.append(s[kept])
            labels.append(torch.full((len(kept),), c, dtype=torch.int64))
        boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
        order = scores.argsort(descending=True)[:max_det]
        boxes, scores, labels = boxes[order], scores[order], labels[order]
        h, w = image_sizes[b]
        boxes = boxes * torch.tensor([w / in_w, h / in_h, w / in_w, h / in_h])
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        results.append({"boxes": boxes, "scores": scores, "labels": labels})
    return results


@pytest.fixture(scope="module")
def anchors():
    # 6x6, 3x3, 2x2, 1x1, 1x1, 1x1 maps: 108 + 54 + 24 + 18 = 204 anchors.
    return DefaultBoxGenerator()([(6, 6), (3, 3), (2, 2), (1, 1), (1, 1), (1, 1)], INPUT)


def random_outputs(num_anchors, num_classes=6, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    cls_logits = torch.randn(batch, num_anchors, num_classes, generator=g) * 2.5
    bbox_regression = torch.randn(batch, num_anchors, 4, generator=g) * 1.5
    return cls_logits, bbox_regression


def assert_same(results, expected):
    assert len(results) == len(expected)
    for r, e in zip(results, expected):
        assert r["labels"].dtype == torch.int64
        assert torch.equal(r["labels"], e["labels"])
        torch.testing.assert_close(r["scores"], e["scores"])
        torch.testing.assert_close(r["boxes"], e["boxes"], atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("classification", ["softmax", "focal"])
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_per_class_nms_loop(anchors, classification, seed):
    params = dict(score_threshold=0.05, nms_threshold=0.45, topk=25, max_det=40)
    cls_logits, bbox_regression = random_outputs(len(anchors), seed=seed)
    processor = PostProcessor(
        BoxCoder(), score_threshold=0.05, nms_threshold=0.45, topk_candidates=25, max_detections=40,
        classification=classification,
    )
    results = processor(cls_logits, bbox_regression, anchors, INPUT, SIZES)
    expected = reference(cls_logits, bbox_regression, anchors, SIZES, classification=classification, **params)
    assert_same(results, expected)
    # The case is not trivial: detections in every image, the cap reached, several classes kept.
    uncapped = reference(cls_logits, bbox_regression, anchors, SIZES, classification=classification,
                         **{**params, "max_det": 10**6})
    assert all(len(r["scores"]) > 0 for r in results)
    assert any(len(u["scores"]) > 40 for u in uncapped)
    assert all(len(r["labels"].unique()) >= 3 for r in results)
    for r in results:
        assert torch.all(r["scores"][:-1] >= r["scores"][1:])
    # One image at a time takes the batch-of-one path; same detections.
    for i, size in enumerate(SIZES):
        (single,) = processor(cls_logits[i : i + 1], bbox_regression[i : i + 1], anchors, INPUT, [size])
        assert_same([single], [expected[i]])


def test_top_k_per_class_binds(anchors):
    cls_logits, bbox_regression = random_outputs(len(anchors), seed=3)
    processor = PostProcessor(BoxCoder(), score_threshold=0.01, nms_threshold=0.99, topk_candidates=5,
                              max_detections=1000)
    results = processor(cls_logits, bbox_regression, anchors, INPUT, SIZES)
    expected = reference(cls_logits, bbox_regression, anchors, SIZES, 0.01, 0.99, 5, 1000)
    assert_same(results, expected)
    for r in results:
        assert torch.bincount(r["labels"]).max() <= 5


def test_boxes_scaled_to_original_size_and_clipped():
    anchors = torch.tensor([[10.0, 20.0, 90.0, 80.0], [-10.0, 50.0, 60.0, 120.0]])
    cls_logits = torch.tensor([[[0.0, 5.0], [0.0, 4.0]]])  # both anchors class 1, no overlap to suppress
    regression = torch.zeros(1, 2, 4)
    processor = PostProcessor(BoxCoder(), score_threshold=0.5, nms_threshold=0.5)
    # Network input 100x100, original image 200 high, 400 wide: x * 4, y * 2.
    (out,) = processor(cls_logits, regression, anchors, (100, 100), [(200, 400)])
    expected = torch.tensor([[40.0, 40.0, 360.0, 160.0], [0.0, 100.0, 240.0, 200.0]])
    torch.testing.assert_close(out["boxes"], expected)
    assert out["labels"].tolist() == [1, 1]
    # Without image sizes, network-input pixels, still clipped to the input.
    (raw,) = processor(cls_logits, regression, anchors, (100, 100))
    torch.testing.assert_close(raw["boxes"], torch.tensor([[10.0, 20.0, 90.0, 80.0], [0.0, 50.0, 60.0, 100.0]]))


def test_image_without_candidates(anchors):
    cls_logits, bbox_regression = random_outputs(len(anchors), seed=4)
    cls_logits[1] = -20.0
    cls_logits[1, :, 0] = 20.0  # background everywhere
    processor = PostProcessor(BoxCoder(), score_threshold=0.05)
    results = processor(cls_logits, bbox_regression, anchors, INPUT, SIZES)
    empty = results[1]
    assert empty["boxes"].shape == (0, 4) and empty["boxes"].dtype == torch.float32
    assert empty["scores"].shape == (0,) and empty["labels"].shape == (0,)
    assert empty["labels"].dtype == torch.int64
    assert len(results[0]["scores"]) > 0 and len(results[2]["scores"]) > 0


def test_batch_without_candidates(anchors):
    cls_logits = torch.zeros(2, len(anchors), 4)
    cls_logits[..., 0] = 30.0
    results = PostProcessor(BoxCoder())(cls_logits, torch.zeros(2, len(anchors), 4), anchors, INPUT, SIZES[:2])
    assert len(results) == 2
    for r in results:
        assert r["boxes"].shape == (0, 4) and r["scores"].shape == (0,) and r["labels"].shape == (0,)


def test_many_candidates_equal_loop():
    """Over 1000 candidates: torchvision's batched_nms takes its per-group path on CPU."""
    anchors = DefaultBoxGenerator()([(12, 12), (6, 6), (3, 3), (2, 2), (1, 1), (1, 1)], INPUT)
    cls_logits, bbox_regression = random_outputs(len(anchors), num_classes=5, seed=5)
    processor = PostProcessor(BoxCoder(), score_threshold=0.02, nms_threshold=0.5, topk_candidates=200,
                              max_detections=300)
    results = processor(cls_logits, bbox_regression, anchors, INPUT, SIZES)
    expected = reference(cls_logits, bbox_regression, anchors, SIZES, 0.02, 0.5, 200, 300)
    probs = cls_logits.softmax(-1)[..., 1:]
    assert (probs.topk(200, dim=1).values > 0.02).sum() > 1000
    assert_same(results, expected)


def test_runs_on_one_thread_and_restores_the_count(anchors, monkeypatch):
    """The ops run with torch's intra-op threads at 1 (they are too small to gain from more), the
    detections are unchanged, and the caller's thread count is back afterwards, also after an error."""
    import detector.modeling.postprocess as module  # batched_nms as the module sees it

    seen = []
    real_nms = module.batched_nms

    def recording_nms(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_nms(*args, **kwargs)

    monkeypatch.setattr(module, "batched_nms", recording_nms)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cls_logits, bbox_regression = random_outputs(len(anchors), seed=3)
        post = PostProcessor(BoxCoder(), score_threshold=0.05, nms_threshold=0.5, topk_candidates=50,
                             max_detections=20)
        results = post(cls_logits, bbox_regression, anchors, INPUT, SIZES)
        assert seen == [1] and torch.get_num_threads() == 2
        assert_same(results, reference(cls_logits, bbox_regression, anchors, SIZES, 0.05, 0.5, 50, 20))
        with pytest.raises((RuntimeError, IndexError)):
            post(cls_logits, bbox_regression[:, :-1], anchors, INPUT, SIZES)  # mismatched anchors
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_nms_on_unclipped_boxes_as_tf_does():
    """Two boxes crossing the left border: unclipped IoU 6000 / 14000 = 0.43, clipped 5000 / 9000 = 0.56.
    At NMS 0.5 torchvision's order (clip, then NMS) drops the weaker one, TF's (NMS, then clip) keeps
    both; a third box wholly outside the image has no area once clipped and goes with min_box_size=0."""
    anchors = torch.tensor([[-50.0, 0, 50, 100], [-10, 0, 90, 100], [110, 0, 150, 100]])
    codes = torch.zeros(1, 3, 4)  # boxes = anchors
    logits = torch.tensor([[[0.0, 3.0], [0.0, 2.0], [0.0, 4.0]]])  # sigmoid scores 0.95, 0.88, 0.98
    common = dict(score_threshold=0.1, nms_threshold=0.5, classification="focal")
    clip_first = PostProcessor(BoxCoder(), **common)(logits, codes, anchors, (100, 100))[0]
    assert clip_first["boxes"].tolist() == [[100, 0, 100, 100], [0, 0, 50, 100]]  # zero area kept, B suppressed
    tf = PostProcessor(BoxCoder(), clip_before_nms=False, min_box_size=0.0, **common)(logits, codes, anchors,
                                                                                     (100, 100))[0]
    assert tf["boxes"].tolist() == [[0, 0, 50, 100], [0, 0, 90, 100]]
    torch.testing.assert_close(tf["scores"], torch.sigmoid(torch.tensor([3.0, 2.0])))

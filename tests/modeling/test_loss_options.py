"""The training-recipe options of issue #22: varifocal and quality focal losses, GIoU / CIoU box losses,
their config keys, that the defaults are today's loss exactly, and that each option trains and a
varifocal model exports with sigmoid scores."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader
from torchvision.ops import box_iou, complete_box_iou_loss, generalized_box_iou_loss, sigmoid_focal_loss

from detector.labels import LabelMap
from detector.modeling.atss import ATSSMatcher
from detector.modeling.boxes import BoxCoder
from detector.modeling.loss import CLASSIFICATIONS, MultiBoxLoss, quality_focal_loss, varifocal_loss
from detector.modeling.matching import SSDMatcher
from detector.modeling.postprocess import SIGMOID_CLASSIFICATIONS
from detector.modeling.ssdlite import BOX_CODER_WEIGHTS, DEFAULTS, build_model, build_post_processor, resolve_config
from detector.training.module import DetectorModule

ROOT = Path(__file__).resolve().parents[2]
LN3 = math.log(3.0)  # sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4

# The hand case of tests/modeling/test_loss.py: five 10x10 anchors in a row; the box [1, 1, 11, 11]
# (label 2) overlaps anchor 0 only (IoU 81/119 >= 0.5).
ANCHORS = torch.tensor([[20.0 * i, 0.0, 20.0 * i + 10.0, 10.0] for i in range(5)])
TARGET = {"boxes": torch.tensor([[1.0, 1.0, 11.0, 11.0]]), "labels": torch.tensor([2])}
EMPTY = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
LOGITS = torch.tensor([[0.0, 0.5, 1.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [1.0, -1.0, 0.0], [0.0, 1.0, 1.0]])
REGRESSION = torch.tensor([[0.5, 3.0, 0.2, -0.1]] + [[9.0, 9.0, 9.0, 9.0]] * 4)


def make_loss(**kwargs) -> MultiBoxLoss:
    return MultiBoxLoss(BoxCoder(), SSDMatcher(0.5), **kwargs)


def bce(p: float, y: float) -> float:
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


# --- the class losses, by hand ----------------------------------------------------------------------


def test_varifocal_loss_by_hand():
    # Logits ln 3, ln 3, -ln 3 -> p = 0.75, 0.75, 0.25; targets q = 0.6 (a positive), 0, 0.
    #   positive:   -q (q log p + (1 - q) log(1 - p)) = 0.6 * (0.6 * 0.28768 + 0.4 * 1.38629) = 0.43628
    #   negative 1: -alpha p^gamma log(1 - p) = 0.75 * 0.5625 * 1.38629 = 0.58484
    #   negative 2: 0.75 * 0.0625 * 0.28768 = 0.01349
    #   sum = 1.03460
    logits = torch.tensor([LN3, LN3, -LN3])
    targets = torch.tensor([0.6, 0.0, 0.0])
    expected = 0.6 * bce(0.75, 0.6) + 0.75 * 0.75**2 * -math.log(0.25) + 0.75 * 0.25**2 * -math.log(0.75)
    assert expected == pytest.approx(1.03460, abs=1e-5)
    assert varifocal_loss(logits, targets, alpha=0.75, gamma=2.0).item() == pytest.approx(expected, rel=1e-6)


def test_quality_focal_loss_by_hand():
    # Same logits (sigma = 0.75, 0.75, 0.25), soft targets y = 0.6, 0, 0; beta 2:
    #   |y - sigma|^2 * BCE(sigma, y): 0.15^2 * 0.72713 = 0.01636, 0.75^2 * 1.38629 = 0.77979,
    #   0.25^2 * 0.28768 = 0.01798; sum = 0.81413
    logits = torch.tensor([LN3, LN3, -LN3])
    targets = torch.tensor([0.6, 0.0, 0.0])
    expected = 0.15**2 * bce(0.75, 0.6) + 0.75**2 * bce(0.75, 0.0) + 0.25**2 * bce(0.25, 0.0)
    assert expected == pytest.approx(0.81413, abs=1e-5)
    assert quality_focal_loss(logits, targets, beta=2.0).item() == pytest.approx(expected, rel=1e-6)


def test_quality_focal_with_hard_targets_is_focal_loss_without_alpha():
    # y in {0, 1}: |y - sigma|^beta = (1 - p_t)^gamma, the focal term (GFL, section 3).
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, generator=g)
    targets = (torch.rand(4, 6, generator=g) > 0.7).float()
    expected = sigmoid_focal_loss(logits, targets, alpha=-1, gamma=2.0, reduction="sum")
    assert quality_focal_loss(logits, targets).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("classification", ["varifocal", "quality_focal"])
def test_iou_aware_classification_in_the_loss(classification):
    """Target: the IoU of anchor 0's decoded box with its ground truth at class 2, 0 elsewhere; the sum
    over every (anchor, foreground class) divided by the one positive."""
    out = make_loss(classification=classification)(LOGITS[None], REGRESSION[None], ANCHORS, [TARGET])
    decoded = BoxCoder().decode(REGRESSION[:1], ANCHORS[:1])
    q = box_iou(decoded, TARGET["boxes"]).item()
    assert 0 < q < 1
    targets = torch.zeros(5, 2)
    targets[0, 1] = q
    fn = varifocal_loss if classification == "varifocal" else quality_focal_loss
    assert out["num_positives"].item() == 1
    assert out["loss_cls"].item() == pytest.approx(fn(LOGITS[:, 1:], targets).item(), rel=1e-5)
    # Written out for the positive (logit 1.0 at class 2) and one negative (anchor 1, class 1, logit 2):
    p, n = 1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(-2.0))
    terms = {"varifocal": (q * bce(p, q), 0.75 * n**2 * bce(n, 0.0)),
             "quality_focal": ((q - p) ** 2 * bce(p, q), n**2 * bce(n, 0.0))}[classification]
    one = fn(torch.tensor([1.0, 2.0]), torch.tensor([q, 0.0])).item()
    assert one == pytest.approx(sum(terms), rel=1e-5)


def test_iou_targets_carry_no_gradient_into_the_boxes():
    logits = LOGITS[None].clone().requires_grad_()
    regression = REGRESSION[None].clone().requires_grad_()
    out = make_loss(classification="varifocal")(logits, regression, ANCHORS, [TARGET])
    out["loss_cls"].backward()
    assert logits.grad.any() and (regression.grad is None or not regression.grad.any())


@pytest.mark.parametrize("classification", ["varifocal", "quality_focal"])
def test_iou_aware_without_boxes_is_finite(classification):
    logits = LOGITS[None].clone().requires_grad_()
    out = make_loss(classification=classification, box_loss="giou")(logits, REGRESSION[None], ANCHORS, [EMPTY])
    assert out["num_positives"].item() == 0 and out["loss_box"].item() == 0.0
    assert torch.isfinite(out["loss"]) and out["loss_cls"].item() > 0
    out["loss"].backward()
    assert torch.isfinite(logits.grad).all()


# --- the box losses ---------------------------------------------------------------------------------


def test_giou_and_ciou_by_hand():
    # One anchor [0, 0, 2, 2], zero regression (the decoded box is the anchor), box [1, 1, 3, 3]
    # (forced onto the only anchor).
    #   IoU = 1 / 7 (intersection 1, union 4 + 4 - 1); enclosing box [0, 0, 3, 3], area 9.
    #   GIoU = 1/7 - (9 - 7)/9 = -0.07937 -> loss 1.07937.
    #   CIoU = IoU - rho^2 / c^2 - alpha v: centres (1, 1) and (2, 2), rho^2 = 2; enclosing diagonal
    #   c^2 = 18; both square, v = 0 -> loss 1 - 1/7 + 1/9 = 0.96825.
    anchors = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    target = {"boxes": torch.tensor([[1.0, 1.0, 3.0, 3.0]]), "labels": torch.tensor([1])}
    logits, regression = torch.zeros(1, 1, 2), torch.zeros(1, 1, 4)
    giou = make_loss(box_loss="giou", box_loss_weight=1.0)(logits, regression, anchors, [target])["loss_box"]
    ciou = make_loss(box_loss="ciou", box_loss_weight=1.0)(logits, regression, anchors, [target])["loss_box"]
    assert giou.item() == pytest.approx(1 + 2 / 9 - 1 / 7, rel=1e-6)
    assert ciou.item() == pytest.approx(1 - 1 / 7 + 2 / 18, rel=1e-6)
    weighted = make_loss(box_loss="giou", box_loss_weight=2.0)(logits, regression, anchors, [target])["loss_box"]
    assert weighted.item() == pytest.approx(2 * giou.item(), rel=1e-6)


@pytest.mark.parametrize("box_loss", ["giou", "ciou", "smooth_l1+giou"])
def test_iou_box_losses_equal_torchvision_on_the_decoded_boxes(box_loss):
    g = torch.Generator().manual_seed(1)
    anchors = torch.tensor([[20.0 * i, 0.0, 20.0 * i + 10.0, 10.0] for i in range(10)])
    target = {"boxes": torch.tensor([[1.0, 1.0, 11.0, 11.0], [41.0, 0.0, 52.0, 9.0]]), "labels": torch.tensor([1, 2])}
    regression = torch.randn(2, 10, 4, generator=g)
    logits = torch.randn(2, 10, 3, generator=g)
    out = make_loss(box_loss=box_loss)(logits, regression, anchors, [target, target])
    positive = torch.tensor([0, 2])  # anchor 0 <- box 0, anchor 2 <- box 1, in both images
    decoded = BoxCoder().decode(regression[:, positive], anchors[positive]).reshape(-1, 4)
    gt = target["boxes"].repeat(2, 1)
    iou_fn = complete_box_iou_loss if box_loss == "ciou" else generalized_box_iou_loss
    expected = 2.0 * iou_fn(decoded, gt, reduction="sum")  # box_loss_weight's default
    if box_loss == "smooth_l1+giou":
        expected = expected + make_loss()(logits, regression, anchors, [target, target])["loss_box"] * 4
    assert out["num_positives"].item() == 4
    assert out["loss_box"].item() == pytest.approx(expected.item() / 4, rel=1e-5)
    # The class term does not depend on the box term.
    assert out["loss_cls"].item() == pytest.approx(make_loss()(logits, regression, anchors, [target, target])
                                                   ["loss_cls"].item(), rel=1e-6)


def test_unknown_options_are_refused():
    with pytest.raises(ValueError, match="box_loss"):
        make_loss(box_loss="iou")
    with pytest.raises(ValueError, match="varifocal"):
        make_loss(classification="vfl")
    with pytest.raises(ValueError, match="assigner"):
        build_model(num_classes=3, width_mult=0.35, image_size=96, assigner="max_iou")


# --- config: defaults are today's loss, old configs still build ------------------------------------


def fixed_batch(image_size: int = 128) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, image_size, image_size, generator=g)
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [64.0, 64.0, 120.0, 100.0]]),
                "labels": torch.tensor([1, 3])},
               {"boxes": torch.tensor([[5.0, 5.0, 30.0, 40.0]]), "labels": torch.tensor([2])}]
    return images, targets


@pytest.mark.parametrize("classification", ["softmax", "focal"])
def test_defaults_give_exactly_the_loss_built_the_old_way(classification):
    torch.manual_seed(0)
    model = build_model(num_classes=4, width_mult=0.35, image_size=128, classification=classification)
    assert type(model.criterion.matcher) is SSDMatcher and model.criterion.box_loss == "smooth_l1"
    images, targets = fixed_batch()
    cls_logits, bbox_regression = model(images)
    # MultiBoxLoss as build_model made it before the new options.
    old = MultiBoxLoss(BoxCoder(BOX_CODER_WEIGHTS), SSDMatcher(0.5), classification=classification, neg_pos_ratio=3.0)
    expected = old(cls_logits, bbox_regression, model.anchors, targets)
    got = model.compute_loss(images, targets)
    for key in ("loss", "loss_box", "loss_cls", "num_positives"):
        assert torch.equal(got[key], expected[key]), key


def test_config_without_the_new_keys_still_builds():
    new_keys = {"assigner", "atss_topk", "box_loss", "box_loss_weight"}
    assert new_keys <= set(DEFAULTS)
    old = {k: v for k, v in resolve_config(num_classes=3, width_mult=0.35, image_size=96).items() if k not in new_keys}
    model = build_model(old)
    assert type(model.criterion.matcher) is SSDMatcher and model.criterion.matcher.iou_threshold == 0.5
    assert model.criterion.box_loss == "smooth_l1" and model.criterion.classification == "softmax"
    assert {k: model.config[k] for k in new_keys} == {k: DEFAULTS[k] for k in new_keys}


def test_options_reach_the_loss_and_sigmoid_losses_decode_as_focal():
    model = build_model(num_classes=3, width_mult=0.35, image_size=96, assigner="atss", atss_topk=5,
                        box_loss="ciou", box_loss_weight=1.5, classification="varifocal")
    criterion = model.criterion
    assert isinstance(criterion.matcher, ATSSMatcher) and criterion.matcher.topk == 5
    assert (criterion.box_loss, criterion.box_loss_weight, criterion.classification) == ("ciou", 1.5, "varifocal")
    assert model.config["classification"] == "varifocal"
    # Every classification loss but softmax trains sigmoid scores, decoded as "focal" (the ONNX graph's name).
    assert set(CLASSIFICATIONS) - {"softmax"} == set(SIGMOID_CLASSIFICATIONS)
    for name in SIGMOID_CLASSIFICATIONS:
        assert build_post_processor({"classification": name}).classification == "focal"
    assert build_post_processor({"classification": "softmax"}).classification == "softmax"
    logits = torch.randn(1, 4, 3)
    assert torch.equal(model.post_processor.scores(logits), logits[..., 1:].sigmoid())


# --- training smoke through the LightningModule, and an ONNX export --------------------------------

LABELS = {"category_ids": [1, 2, 3], "names": ["a", "b", "c"]}
SMOKE_OPTIONS = {
    "atss": {"assigner": "atss"},
    "giou": {"box_loss": "giou"},
    "ciou": {"box_loss": "ciou"},
    "smooth_l1+giou": {"box_loss": "smooth_l1+giou"},
    "varifocal": {"classification": "varifocal"},
    "quality_focal": {"classification": "quality_focal"},
    "modern": {"assigner": "atss", "box_loss": "giou", "classification": "varifocal", "ema_decay": 0.99},
}


def train_three_steps(**options) -> tuple[DetectorModule, list[float]]:
    torch.manual_seed(0)
    module = DetectorModule(width_mult=0.35, image_size=96, label_map=LABELS, lr=0.01, warmup_steps=1, **options)
    images, targets = fixed_batch(96)
    targets = [{**t, "boxes": t["boxes"] * 0.75} for t in targets]  # the 128 px boxes at 96 px
    losses: list[float] = []
    step = module.training_step

    def recording_step(batch, batch_idx):
        loss = step(batch, batch_idx)
        losses.append(loss.item())
        return loss

    module.training_step = recording_step
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=3, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    # batch_size=None: the loader hands out the prepared batch as it is.
    trainer.fit(module, train_dataloaders=DataLoader([(images, targets)] * 3, batch_size=None))
    return module, losses


@pytest.mark.parametrize("name", list(SMOKE_OPTIONS))
def test_three_training_steps_have_finite_losses(name):
    module, losses = train_three_steps(**SMOKE_OPTIONS[name])
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses), losses
    for key, value in SMOKE_OPTIONS[name].items():
        if key != "ema_decay":
            assert module.model.config[key] == value


def test_varifocal_model_exports_to_onnx_with_sigmoid_scores(tmp_path):
    pytest.importorskip("onnxruntime")
    from detector.deploy.onnx_export import export_onnx
    from detector.deploy.onnx_runtime import load_onnx_runner

    module, _ = train_three_steps(classification="varifocal")
    model = module.model.eval()
    x, _ = fixed_batch(96)
    with torch.no_grad():
        cls_logits, _ = model(x)
    best = cls_logits[..., 1:].sigmoid().flatten(1).amax(dim=1)  # the top box always survives NMS
    labels = LabelMap.from_dict(LABELS)
    for with_nms in (False, True):
        result = export_onnx(model, labels, tmp_path / f"vfl_{with_nms}.onnx", dynamic_batch=True, with_nms=with_nms)
        runner = load_onnx_runner(result.path, num_threads=1)
        assert runner.info.config["classification"] == "varifocal"
        assert runner.info.postprocess["classification"] == "focal"
        detections = runner(x)
        for b, det in enumerate(detections):
            assert det["scores"][0].item() == pytest.approx(best[b].item(), abs=1e-4)


def test_modern_quickstart_config_builds():
    config = yaml.safe_load((ROOT / "configs" / "quickstart_modern.yaml").read_text())
    quickstart = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    model_options = config["model"]
    assert (model_options["assigner"], model_options["box_loss"], model_options["classification"]) == (
        "atss", "giou", "varifocal")
    assert model_options["ema_decay"] is not None
    assert config["data"] == quickstart["data"]
    assert config["trainer"]["max_epochs"] == quickstart["trainer"]["max_epochs"]
    module = DetectorModule(**model_options, image_size=config["data"]["image_size"], label_map=LABELS)
    assert isinstance(module.model.criterion.matcher, ATSSMatcher)


def test_sigmoid_models_start_at_the_retinanet_prior_softmax_models_at_zero_bias():
    """Every foreground sigmoid score of a fresh sigmoid-scored model is close to 0.01 (bias
    -log(99) = -4.595, weights std 0.03 move it little); softmax models keep zero biases."""
    import math

    from detector.modeling.ssdlite import build_model

    torch.manual_seed(0)
    for classification in ("focal", "varifocal", "quality_focal"):
        model = build_model(num_classes=4, width_mult=0.35, image_size=96, classification=classification).eval()
        for head in model.head.cls_heads:
            bias = head[-1].bias.view(-1, 4)
            assert torch.all(bias[:, 1:] == -math.log(99.0)) and torch.all(bias[:, 0] == 0)
        with torch.no_grad():
            cls_logits, _ = model(torch.randn(1, 3, 96, 96))
        scores = cls_logits[..., 1:].sigmoid()
        assert abs(float(scores.median()) - 0.01) < 0.005, classification
    softmax = build_model(num_classes=4, width_mult=0.35, image_size=96).eval()
    assert all(torch.all(head[-1].bias == 0) for head in softmax.head.cls_heads)

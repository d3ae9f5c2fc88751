"""MultiBoxLoss against hand computations."""
import math

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from detector.modeling.boxes import BoxCoder
from detector.modeling.loss import MultiBoxLoss
from detector.modeling.matching import SSDMatcher

# Five 10x10 anchors in a row, far apart: one ground truth overlaps only anchor 0.
ANCHORS = torch.tensor([[20.0 * i, 0.0, 20.0 * i + 10.0, 10.0] for i in range(5)])
# Box [1, 1, 11, 11], label 2: IoU with anchor 0 = 81 / 119; codes (10 * 1/10, 10 * 1/10, 0, 0).
TARGET = {"boxes": torch.tensor([[1.0, 1.0, 11.0, 11.0]]), "labels": torch.tensor([2])}
EMPTY = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
LOGITS = torch.tensor(
    [
        [0.0, 0.0, 1.0],  # positive, target 2
        [0.0, 2.0, 0.0],  # negatives (target 0), hardness 2 > 4 > 1 > 3
        [0.0, 0.0, 3.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 1.0],
    ]
)
REGRESSION = torch.tensor(
    [[0.5, 3.0, 0.2, -0.1], [9.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]]
)


def ce(logits, target):
    """-log softmax(logits)[target], written out."""
    return math.log(sum(math.exp(v) for v in logits)) - logits[target]


def smooth_l1(d):
    return 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5


def make_loss(**kwargs):
    return MultiBoxLoss(BoxCoder(), SSDMatcher(0.5), **kwargs)


def test_hand_built_case():
    loss = make_loss()(LOGITS[None], REGRESSION[None], ANCHORS, [TARGET])
    # Box: target codes (1, 1, 0, 0); prediction (0.5, 3, 0.2, -0.1).
    expected_box = smooth_l1(-0.5) + smooth_l1(2.0) + smooth_l1(0.2) + smooth_l1(-0.1)
    assert expected_box == pytest.approx(0.125 + 1.5 + 0.02 + 0.005)
    # Class: the positive, plus the 3 hardest of 4 negatives (anchors 1, 2, 4; anchor 3 is easy).
    rows = LOGITS.tolist()
    expected_cls = ce(rows[0], 2) + ce(rows[1], 0) + ce(rows[2], 0) + ce(rows[4], 0)
    assert loss["num_positives"].item() == 1
    assert loss["loss_box"].item() == pytest.approx(expected_box, rel=1e-5)
    assert loss["loss_cls"].item() == pytest.approx(expected_cls, rel=1e-5)
    assert loss["loss"].item() == pytest.approx(expected_box + expected_cls, rel=1e-5)


def test_gradients_only_reach_mined_anchors():
    logits = LOGITS[None].clone().requires_grad_()
    regression = REGRESSION[None].clone().requires_grad_()
    make_loss()(logits, regression, ANCHORS, [TARGET])["loss"].backward()
    assert logits.grad[0].abs().sum(dim=1).ne(0).tolist() == [True, True, True, False, True]
    assert regression.grad[0].abs().sum(dim=1).ne(0).tolist() == [True, False, False, False, False]


def test_two_positives_normalise_and_mine_six_negatives():
    anchors = torch.tensor([[20.0 * i, 0.0, 20.0 * i + 10.0, 10.0] for i in range(10)])
    target = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]]), "labels": torch.tensor([1, 1])}
    logits = torch.zeros(1, 10, 2)
    logits[0, 2:, 1] = torch.arange(8, dtype=torch.float32)  # negatives 2..9, hardest last
    regression = torch.zeros(1, 10, 4)
    regression[0, 0, 0] = 0.4
    out = make_loss()(logits, regression, anchors, [target])
    rows = logits[0].tolist()
    expected_cls = (2 * ce([0.0, 0.0], 1) + sum(ce(rows[i], 0) for i in range(4, 10))) / 2
    assert out["num_positives"].item() == 2
    assert out["loss_cls"].item() == pytest.approx(expected_cls, rel=1e-5)
    assert out["loss_box"].item() == pytest.approx(0.5 * 0.4**2 / 2, rel=1e-5)


def test_image_without_boxes():
    logits = LOGITS[None].clone().requires_grad_()
    out = make_loss(min_negatives_per_image=3)(logits, REGRESSION[None], ANCHORS, [EMPTY])
    rows = LOGITS.tolist()
    negatives = sorted((ce(r, 0) for r in rows), reverse=True)
    assert out["num_positives"].item() == 0
    assert out["loss_box"].item() == 0.0
    assert torch.isfinite(out["loss"])
    # No positives: the 3 hardest negatives, normalised by 1.
    assert out["loss_cls"].item() == pytest.approx(sum(negatives[:3]), rel=1e-5)
    out["loss"].backward()
    assert torch.isfinite(logits.grad).all()


def test_batch_with_and_without_boxes():
    logits = torch.stack((LOGITS, LOGITS.flip(0)))
    out = make_loss()(logits, torch.stack((REGRESSION, REGRESSION)), ANCHORS, [TARGET, EMPTY])
    single = make_loss()(LOGITS[None], REGRESSION[None], ANCHORS, [TARGET])
    empty = make_loss()(LOGITS.flip(0)[None], REGRESSION[None], ANCHORS, [EMPTY])
    # Sums over the batch over one positive in all.
    assert out["num_positives"].item() == 1
    assert out["loss_cls"].item() == pytest.approx(single["loss_cls"].item() + empty["loss_cls"].item(), rel=1e-5)
    assert out["loss_box"].item() == pytest.approx(single["loss_box"].item(), rel=1e-5)


def test_focal_equals_torchvision_sigmoid_focal_loss():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, generator=g)
    out = make_loss(classification="focal")(logits, REGRESSION.expand(2, 5, 4), ANCHORS, [TARGET, TARGET])
    targets = torch.zeros(2, 5, 2)
    targets[:, 0, 1] = 1.0  # anchor 0 is class 2 in both images; background has no column
    expected = sigmoid_focal_loss(logits[..., 1:], targets, alpha=0.25, gamma=2.0, reduction="sum") / 2
    assert out["num_positives"].item() == 2
    assert out["loss_cls"].item() == pytest.approx(expected.item(), rel=1e-5)
    # The written-out formula for one term: a positive with logit x: -alpha (1 - p)^2 log p.
    p = torch.sigmoid(logits[0, 0, 2]).item()
    assert sigmoid_focal_loss(logits[0, 0, 2], torch.tensor(1.0), reduction="sum").item() == pytest.approx(
        -0.25 * (1 - p) ** 2 * math.log(p), rel=1e-5
    )


def test_focal_without_boxes_is_finite():
    out = make_loss(classification="focal")(LOGITS[None], REGRESSION[None], ANCHORS, [EMPTY])
    assert torch.isfinite(out["loss"]) and out["loss_box"].item() == 0.0 and out["loss_cls"].item() > 0


def test_unknown_classification():
    with pytest.raises(ValueError, match="softmax"):
        make_loss(classification="sigmoid")


def test_boxes_without_area_are_ignored():
    """A zero-width box would encode to log(0) and steal anchor 0 by the forced match."""
    degenerate = {
        "boxes": torch.tensor([[1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 50.0, 60.0], [70.0, 5.0, 80.0, 5.0]]),
        "labels": torch.tensor([2, 1, 1]),
    }
    out = make_loss()(LOGITS[None], REGRESSION[None], ANCHORS, [degenerate])
    clean = make_loss()(LOGITS[None], REGRESSION[None], ANCHORS, [TARGET])
    assert torch.isfinite(out["loss"])
    for key in ("loss", "loss_box", "loss_cls", "num_positives"):
        assert out[key].item() == pytest.approx(clean[key].item()), key

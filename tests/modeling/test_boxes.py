"""BoxCoder: center-size coding with (10, 10, 5, 5) weights, checked against torchvision."""
import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

from detector.modeling.boxes import BBOX_XFORM_CLIP, BoxCoder, scale_boxes_to_image

WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def random_boxes(n: int, generator: torch.Generator, size: float = 300.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * size
    wh = torch.rand(n, 2, generator=generator) * size / 2 + 10.0  # side ratios < 62.5: no clamp
    return torch.cat((xy, xy + wh), dim=1)


@pytest.fixture
def boxes_and_anchors():
    g = torch.Generator().manual_seed(0)
    return random_boxes(500, g), random_boxes(500, g)


def test_default_weights():
    assert BoxCoder().weights == WEIGHTS


@pytest.mark.parametrize("weights", [WEIGHTS, (1.0, 2.0, 3.0, 4.0)])
def test_encode_equals_torchvision(boxes_and_anchors, weights):
    boxes, anchors = boxes_and_anchors
    expected = TVBoxCoder(weights=weights).encode_single(boxes, anchors)
    torch.testing.assert_close(BoxCoder(weights).encode(boxes, anchors), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weights", [WEIGHTS, (1.0, 2.0, 3.0, 4.0)])
def test_decode_equals_torchvision(boxes_and_anchors, weights):
    _, anchors = boxes_and_anchors
    codes = torch.randn(500, 4, generator=torch.Generator().manual_seed(1)) * 2.0
    expected = TVBoxCoder(weights=weights).decode_single(codes, anchors)
    torch.testing.assert_close(BoxCoder(weights).decode(codes, anchors), expected, rtol=1e-5, atol=1e-4)


def test_decode_clamps_like_torchvision():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    codes = torch.tensor([[0.0, 0.0, 100.0, 100.0]])  # exp(20) unclamped
    expected = TVBoxCoder(weights=WEIGHTS).decode_single(codes, anchors)
    decoded = BoxCoder(WEIGHTS).decode(codes, anchors)
    torch.testing.assert_close(decoded, expected)
    # The clamp is log(1000 / 16): at most 62.5 times the anchor's side.
    assert math.isclose(BBOX_XFORM_CLIP, math.log(62.5))
    torch.testing.assert_close(decoded, torch.tensor([[5 - 312.5, 5 - 312.5, 5 + 312.5, 5 + 312.5]]))


def test_decode_inverts_encode(boxes_and_anchors):
    boxes, anchors = boxes_and_anchors
    coder = BoxCoder()
    torch.testing.assert_close(coder.decode(coder.encode(boxes, anchors), anchors), boxes, rtol=1e-5, atol=1e-3)


def test_hand_computed_codes():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    boxes = torch.tensor([[5.0, 5.0, 15.0, 15.0], [0.0, 0.0, 20.0, 10.0]])
    # centre shift 5 on a 10 px anchor -> 10 * 0.5; width doubled -> 5 * log(2).
    expected = torch.tensor([[5.0, 5.0, 0.0, 0.0], [5.0, 0.0, 5.0 * math.log(2.0), 0.0]])
    torch.testing.assert_close(BoxCoder().encode(boxes, anchors), expected)


def test_broadcasts_over_batch(boxes_and_anchors):
    boxes, anchors = boxes_and_anchors
    coder = BoxCoder()
    codes = torch.randn(3, 500, 4, generator=torch.Generator().manual_seed(2))
    batched = coder.decode(codes, anchors)
    assert batched.shape == (3, 500, 4)
    for i in range(3):
        torch.testing.assert_close(batched[i], coder.decode(codes[i], anchors))
    batched_codes = coder.encode(boxes.expand(3, -1, -1), anchors)
    torch.testing.assert_close(batched_codes[1], coder.encode(boxes, anchors))


def test_scale_boxes_to_image_hand_computed():
    """Input (64, 128) -> image (32, 256): x * 256 / 128 = 2x, y * 32 / 64 = y / 2, clipped to 256 x 32."""
    boxes = torch.tensor([[10.0, 20.0, 50.0, 60.0], [100.0, 100.0, 140.0, 130.0], [-4.0, -2.0, 8.0, 6.0]])
    got = scale_boxes_to_image(boxes, (64, 128), (32, 256))
    torch.testing.assert_close(got, torch.tensor([[20.0, 10.0, 100.0, 30.0], [200.0, 32.0, 256.0, 32.0],
                                                  [0.0, 0.0, 16.0, 3.0]]))
    # One (h, w) per box: the second box goes to a 640 x 64 (h x w) image: x / 2, y * 10, clipped.
    per_box = scale_boxes_to_image(boxes[:2], (64, 128), torch.tensor([[32, 256], [640, 64]]))
    torch.testing.assert_close(per_box, torch.tensor([[20.0, 10.0, 100.0, 30.0], [50.0, 640.0, 64.0, 640.0]]))
    assert scale_boxes_to_image(torch.zeros(0, 4), (64, 128), (32, 256)).shape == (0, 4)

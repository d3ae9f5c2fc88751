"""SSD default boxes as TF's ssd_anchor_generator makes them."""
import math

import pytest
import torch

from detector.modeling.anchors import DefaultBoxGenerator

SIZES_320 = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
SIZES_300 = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


@pytest.mark.parametrize(
    "sizes, image, reduce, expected",
    [(SIZES_320, 320, True, 2034), (SIZES_320, 320, False, 3234), (SIZES_300, 300, True, 1917)],
)
def test_anchor_counts(sizes, image, reduce, expected):
    generator = DefaultBoxGenerator(reduce_boxes_in_lowest_layer=reduce)
    anchors = generator(sizes, (image, image))
    assert anchors.shape == (expected, 4)
    assert anchors.dtype == torch.float32


def test_reduce_is_the_default():
    assert DefaultBoxGenerator().reduce_boxes_in_lowest_layer is True
    assert DefaultBoxGenerator().num_anchors_per_location() == [3, 6, 6, 6, 6, 6]
    assert DefaultBoxGenerator(reduce_boxes_in_lowest_layer=False).num_anchors_per_location() == [6] * 6


def test_scales_linear_from_0_2_to_0_95():
    generator = DefaultBoxGenerator()
    assert generator.scales == pytest.approx([0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0])


def flat(specs):
    return [v for spec in specs for v in spec]


def test_lowest_layer_specs():
    reduced = DefaultBoxGenerator()
    assert flat(reduced.box_specs[0]) == pytest.approx([0.1, 1.0, 0.2, 2.0, 0.2, 0.5])
    full = DefaultBoxGenerator(reduce_boxes_in_lowest_layer=False)
    assert flat(full.box_specs[0]) == pytest.approx(
        flat([(0.2, 1.0), (0.2, 2.0), (0.2, 0.5), (0.2, 3.0), (0.2, 1 / 3), (math.sqrt(0.2 * 0.35), 1.0)])
    )
    # Only the lowest layer is reduced.
    assert reduced.box_specs[1:] == full.box_specs[1:]


def test_last_level_1x1_anchors_hand_computed():
    """The 1x1 map at 300x300: centre (150, 150), scale 0.95, extra scale sqrt(0.95 * 1.0)."""
    anchors = DefaultBoxGenerator()(SIZES_300, (300, 300))
    expected = torch.tensor(
        [
            [7.5, 7.5, 292.5, 292.5],  # 0.95 * 300 = 285 square
            [-51.5254, 49.2373, 351.5254, 250.7627],  # ratio 2: 403.05 x 201.53
            [49.2373, -51.5254, 250.7627, 351.5254],  # ratio 1/2
            [-96.8172, 67.7276, 396.8172, 232.2724],  # ratio 3: 493.63 x 164.54
            [67.7276, -96.8172, 232.2724, 396.8172],  # ratio 1/3
            [3.7981, 3.7981, 296.2019, 296.2019],  # sqrt(0.95) * 300 = 292.40 square
        ]
    )
    torch.testing.assert_close(anchors[-6:], expected, atol=1e-3, rtol=0)


def test_reduced_single_level_1x1_hand_computed():
    anchors = DefaultBoxGenerator(num_levels=1, min_scale=0.2, max_scale=0.2)([(1, 1)], (100, 100))
    expected = torch.tensor(
        [
            [45.0, 45.0, 55.0, 55.0],  # (0.1, 1): 10 x 10
            [35.8579, 42.9289, 64.1421, 57.0711],  # (0.2, 2): 28.28 x 14.14
            [42.9289, 35.8579, 57.0711, 64.1421],  # (0.2, 1/2)
        ]
    )
    torch.testing.assert_close(anchors, expected, atol=1e-3, rtol=0)


def test_unreduced_single_level_1x1_docstring_example():
    generator = DefaultBoxGenerator(
        num_levels=1, min_scale=0.2, max_scale=0.2, aspect_ratios=(1.0, 2.0), reduce_boxes_in_lowest_layer=False
    )
    anchors = generator([(1, 1)], (100, 100))
    expected = torch.tensor(
        [
            [40.0, 40.0, 60.0, 60.0],
            [35.8579, 42.9289, 64.1421, 57.0711],
            [27.6393, 27.6393, 72.3607, 72.3607],  # sqrt(0.2 * 1.0) * 100 = 44.72
        ]
    )
    torch.testing.assert_close(anchors, expected, atol=1e-3, rtol=0)


def test_order_is_level_row_column_spec():
    generator = DefaultBoxGenerator(num_levels=2)
    anchors = generator([(2, 3), (1, 1)], (200, 300))
    assert anchors.shape == (2 * 3 * 3 + 6, 4)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    level0 = centres[:18].reshape(2, 3, 3, 2)  # rows, columns, specs, (x, y)
    # Within a location all specs share a centre; x varies along columns, y along rows.
    expected_x = torch.tensor([50.0, 150.0, 250.0])
    expected_y = torch.tensor([50.0, 150.0])
    torch.testing.assert_close(level0[..., 0], expected_x.view(1, 3, 1).expand(2, 3, 3))
    torch.testing.assert_close(level0[..., 1], expected_y.view(2, 1, 1).expand(2, 3, 3))
    torch.testing.assert_close(centres[18:], torch.tensor([[150.0, 100.0]]).expand(6, 2))


def test_non_square_image_uses_each_side():
    anchors = DefaultBoxGenerator(num_levels=1, reduce_boxes_in_lowest_layer=False)([(1, 1)], (100, 200))
    # scale 0.2, ratio 1: 0.2 of each side
    torch.testing.assert_close(anchors[0], torch.tensor([80.0, 40.0, 120.0, 60.0]))


def test_wrong_number_of_maps():
    with pytest.raises(ValueError, match="expected 6 feature maps"):
        DefaultBoxGenerator()([(1, 1)], (100, 100))

"""Box and overlay drawing: pixels land where the boxes are, colours are stable, input untouched."""
from __future__ import annotations

import numpy as np
import pytest

from detector.video.draw import color_for, draw_detections, draw_overlay


def blank(h: int = 240, w: int = 320) -> np.ndarray:
    return np.zeros((h, w, 3), dtype=np.uint8)


def test_box_edges_are_drawn_in_the_class_colour_and_input_is_untouched() -> None:
    img = blank()
    out = draw_detections(img, np.array([[60.0, 100.0, 200.0, 180.0]]), np.array([0.87]), ["car"],
                          thickness=2)
    assert img.max() == 0, "the input must not be modified"
    assert out.shape == img.shape and out.dtype == np.uint8
    col = np.array(color_for("car"))
    # Left and bottom edges (the label sits above the top edge) carry the colour.
    assert np.array_equal(out[140, 60], col)
    assert np.array_equal(out[180, 130], col)
    # The box's inside and the far corner of the image stay black.
    assert out[140, 130].max() == 0
    assert out[230, 310].max() == 0
    # The label is drawn above the box: coloured pixels just above the top-left corner.
    assert (out[85:100, 60:100] != 0).any()


def test_colour_keys_are_stable_and_distinct() -> None:
    assert color_for("car") == color_for("car")
    assert color_for("car") != color_for("person")
    assert len({color_for(i) for i in range(1, 21)}) == 20
    b = np.array([[20.0, 40.0, 120.0, 200.0]])
    by_track = draw_detections(blank(), b, [0.5], ["car"], track_ids=[12], thickness=2)
    assert np.array_equal(by_track[120, 20], color_for(12))
    by_class = draw_detections(blank(), b, [0.5], ["car"], track_ids=[12], color_key="class", thickness=2)
    assert np.array_equal(by_class[120, 20], color_for("car"))
    # An untracked box among tracked ones falls back to its class colour.
    mixed = draw_detections(blank(), b, [0.5], ["car"], track_ids=[None], thickness=2)
    assert np.array_equal(mixed[120, 20], color_for("car"))


def test_label_text_changes_with_score_and_track_id() -> None:
    b = np.array([[40.0, 60.0, 200.0, 200.0]])
    plain = draw_detections(blank(), b, None, ["car"])
    scored = draw_detections(blank(), b, [0.87], ["car"])
    tracked = draw_detections(blank(), b, [0.87], ["car"], track_ids=[12], color_key="class")
    # Longer label text ("car 0.87" < "#12 car 0.87") covers more of the label band.
    band = (slice(0, 57), slice(0, 320))  # above the top edge at y = 60
    widths = [np.flatnonzero((im[band] != 0).any(axis=(0, 2))).max() for im in (plain, scored, tracked)]
    assert widths[0] < widths[1] < widths[2]


def test_box_at_the_top_and_degenerate_inputs() -> None:
    # A box touching the top edge gets its label inside; off-image and NaN boxes do not crash.
    out = draw_detections(blank(), [[0, 0, 100, 50], [-50, -50, 500, 500], [np.nan, 0, 1, 1]],
                          [0.9, 0.5, 0.1], ["a", "b", "c"])
    assert out.shape == (240, 320, 3)
    empty = draw_detections(blank(), np.zeros((0, 4)), np.zeros(0), [])
    assert empty.max() == 0
    with pytest.raises(ValueError):
        draw_detections(blank(), [[0, 0, 10, 10]], [0.5, 0.4], ["a"])
    with pytest.raises(ValueError):
        draw_detections(np.zeros((10, 10), np.uint8), [], None, [])


def test_overlay_writes_text_in_a_dark_panel_top_left() -> None:
    img = np.full((240, 320, 3), 200, dtype=np.uint8)
    out = draw_overlay(img, ["model 12.3 ms", "FPS 41.0"])
    assert img.min() == 200
    panel = out[8:40, 8:100]
    assert (panel < 200).any() and (panel == 255).any(), "darkened panel with white text"
    assert np.array_equal(out[230, 310], img[230, 310]), "the rest of the frame is unchanged"
    assert np.array_equal(draw_overlay(img, []), img)

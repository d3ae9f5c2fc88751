"""Sliced inference and letterboxing (detector.slicing, Predictor's options): tiles by hand, the merge,
and the Predictor's mapping of every view back to the frame, with a runner that reports its views."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from detector import LabelMap, Predictor
from detector.slicing import FrameView, Slicing, add_view_arguments, letterbox, merge_views, tile_starts, view_options


def test_tile_starts_by_hand():
    assert tile_starts(1242, 375, 0.2) == [0, 300, 600, 867]  # SAHI: step 300; the last ends at the border
    # Even: the fewest tiles whose neighbours share 20 % (867 px to span in steps of at most 300: 3
    # gaps), spread evenly, the last at the border.
    assert tile_starts(1242, 375, 0.2, "even") == [0, 289, 578, 867]
    # A KITTI frame's 643-px tiles of a 224x384 network: SAHI's rule puts the last two 85 px apart.
    assert tile_starts(1242, 643, 0.2) == [0, 514, 599]
    assert tile_starts(1242, 643, 0.2, "even") == [0, 300, 599]
    assert tile_starts(375, 375, 0.2) == [0]
    assert tile_starts(1000, 400, 0.5) == tile_starts(1000, 400, 0.5, "even") == [0, 200, 400, 600]
    assert tile_starts(800, 400, 0.0, "even") == [0, 400]  # tiles that just cover: no third
    assert tile_starts(100, 400, 0.2) == [0]  # a tile larger than the side: one
    with pytest.raises(ValueError, match="placement"):
        tile_starts(1000, 400, 0.2, "random")


def test_default_windows_are_frame_tall_with_the_inputs_aspect():
    windows = Slicing().windows(375, 1242, (300, 300))
    assert windows == [(0, 0, 1242, 375), (0, 0, 375, 375), (300, 0, 675, 375), (600, 0, 975, 375),
                       (867, 0, 1242, 375)]
    assert Slicing(placement="even").windows(375, 1242, (300, 300))[2] == (289, 0, 664, 375)
    assert Slicing(full_frame=False).windows(375, 1242, (300, 300))[0] == (0, 0, 375, 375)
    assert Slicing().windows(300, 300, (300, 300)) == [(0, 0, 300, 300)]  # nothing to slice
    assert Slicing(tile=(200, 200), overlap=0.0).windows(400, 400, (300, 300))[1:] == [
        (0, 0, 200, 200), (200, 0, 400, 200), (0, 200, 200, 400), (200, 200, 400, 400)]
    with pytest.raises(ValueError, match="overlap"):
        Slicing(overlap=1.0)


def test_letterbox_pads_bottom_or_right_with_the_mean():
    image = np.full((100, 300, 3), 7, dtype=np.uint8)
    padded = letterbox(image, (300, 300), (0.5, 0.25, 1.0))
    assert padded.shape == (300, 300, 3)
    assert (padded[:100] == 7).all() and (padded[100:] == [128, 64, 255]).all()
    tall = letterbox(np.zeros((200, 50, 3), np.uint8), (224, 384), (0.0,) * 3)
    assert tall.shape == (200, 343, 3)  # ceil(200 * 384 / 224)
    assert letterbox(image, (100, 300), (0.0,) * 3) is image


def test_merge_shifts_clips_and_suppresses_across_views():
    full = {"boxes": torch.tensor([[100.0, 10, 140, 50]]), "scores": torch.tensor([0.6]), "labels": torch.tensor([1])}
    tile = {"boxes": torch.tensor([[1.0, 11, 41, 51], [0, 0, 500, 10]]), "scores": torch.tensor([0.9, 0.5]),
            "labels": torch.tensor([1, 2])}
    merged = merge_views([full, tile], [(0, 0, 300, 100), (100, 0, 200, 100)], (100, 300), 0.5, None)
    # The tile's first box is the full frame's object one pixel off (IoU 0.9): the better score stays.
    assert merged["boxes"].tolist() == [[101, 11, 141, 51], [100, 0, 300, 10]]  # the second clipped to the frame
    assert merged["scores"].tolist() == pytest.approx([0.9, 0.5]) and merged["labels"].tolist() == [1, 2]
    assert len(merge_views([full, tile], [(0, 0, 300, 100), (100, 0, 200, 100)], (100, 300), 0.5, 1)["boxes"]) == 1


class ViewRunner:
    """Detects each view it is given as one box covering it, and records the network inputs."""

    image_size = (64, 64)
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)
    device = torch.device("cpu")
    max_detections = 100

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    def __call__(self, images, image_sizes):
        self.inputs.append(images)
        return [{"boxes": torch.tensor([[0.0, 0.0, w, h]]), "scores": torch.tensor([0.9 - 0.1 * i]),
                 "labels": torch.tensor([1])} for i, (h, w) in enumerate(image_sizes)]


LABELS = LabelMap((5,), ("car",))


def test_predictor_maps_every_tile_back_to_the_frame():
    runner = ViewRunner()
    frame = np.zeros((100, 300, 3), dtype=np.uint8)
    det = Predictor(runner, LABELS, slicing=Slicing(overlap=0.5)).predict(frame)
    # Views: the frame, then 100x100 tiles at x = 0, 50, ..., 200; neighbours overlap by IoU 1/3 < 0.5.
    assert det["boxes"].tolist() == [[0, 0, 300, 100], [0, 0, 100, 100], [50, 0, 150, 100], [100, 0, 200, 100],
                                     [150, 0, 250, 100], [200, 0, 300, 100]]
    assert np.allclose(det["scores"], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]) and det["category_ids"].tolist() == [5] * 6
    assert runner.inputs[0].shape == (6, 3, 64, 64)  # one forward for all views of the frame


def test_predictor_letterbox_feeds_padding_as_zero_and_clips_to_the_image():
    runner = ViewRunner()
    frame = np.full((32, 64, 3), 255, dtype=np.uint8)
    det = Predictor(runner, LABELS, letterbox=True).predict(frame)
    assert det["boxes"].tolist() == [[0, 0, 64, 32]]  # the runner's [0, 0, 64, 64] of the padded view, clipped
    x = runner.inputs[0][0]
    assert float(x[:, 40:].abs().max()) < 0.02  # the padding is the mean: zero once normalised
    assert float(x[:, :28].min()) == pytest.approx(2.0)  # (1 - 0.5) / 0.25


def test_the_tools_flags():
    parser = argparse.ArgumentParser()
    add_view_arguments(parser)
    assert view_options(parser.parse_args([])) == {}  # nothing set: the model's own view holds
    assert view_options(parser.parse_args(["--no-slice"])) == {"slicing": None, "letterbox": False}
    with pytest.raises(ValueError, match="--no-slice"):
        view_options(parser.parse_args(["--no-slice", "--slice"]))
    assert view_options(parser.parse_args(["--letterbox"])) == {"letterbox": True}
    options = view_options(parser.parse_args(["--slice-size", "300x500", "--slice-overlap", "0.1", "--letterbox"]))
    assert options == {"slicing": Slicing(tile=(300, 500), overlap=0.1), "letterbox": True}
    assert view_options(parser.parse_args(["--slice", "--slice-no-full-frame"]))["slicing"] == Slicing(full_frame=False)
    assert view_options(parser.parse_args(["--slice", "--slice-placement", "even"]))["slicing"] == Slicing(placement="even")
    with pytest.raises(ValueError, match="--slice-placement"):
        view_options(parser.parse_args(["--slice-placement", "even"]))
    with pytest.raises(ValueError, match="slice-size"):
        view_options(parser.parse_args(["--slice-size", "big"]))


class RecordedViewRunner(ViewRunner):
    """A runner whose model records a view (its config's ``view``): slice frames at least 2:1."""

    view = FrameView(slicing=Slicing(overlap=0.5), slice_min_aspect=2.0).to_config()


def test_the_models_recorded_view_is_the_default_and_the_callers_options_override_it():
    wide, narrow = np.zeros((100, 300, 3), np.uint8), np.zeros((100, 150, 3), np.uint8)
    runner = RecordedViewRunner()
    det = Predictor(runner, LABELS).predict_batch([wide, narrow])
    assert len(det[0]["boxes"]) == 6 and det[1]["boxes"].tolist() == [[0, 0, 150, 100]]  # 3:1 sliced, 1.5:1 whole
    assert [x.shape[0] for x in runner.inputs] == [6, 1]
    # The same views as the explicit options give for the wide frame.
    explicit = Predictor(ViewRunner(), LABELS, slicing=Slicing(overlap=0.5)).predict(wide)
    assert det[0]["boxes"].tolist() == explicit["boxes"].tolist()
    # slicing=None (the tools' --no-slice) sees every frame whole; a Slicing applies to every frame.
    assert Predictor(RecordedViewRunner(), LABELS, slicing=None).predict(wide)["boxes"].tolist() == [[0, 0, 300, 100]]
    runner = RecordedViewRunner()
    Predictor(runner, LABELS, slicing=Slicing(overlap=0.5)).predict(narrow)
    assert runner.inputs[0].shape[0] == 3  # the frame and tiles at x = 0, 50
    assert Predictor(ViewRunner(), LABELS).view == FrameView()  # a model that records none: whole frames


def test_frame_view_round_trips_through_a_config():
    view = FrameView(slicing=Slicing(tile=(300, 500), overlap=0.1, placement="even"), slice_min_aspect=2.5,
                     letterbox=True)
    assert FrameView.from_config(view.to_config()) == view
    assert FrameView.from_config(None) == FrameView() and FrameView.from_config(FrameView().to_config()) == FrameView()
    assert view.slicing_for(375, 1242) == view.slicing and view.slicing_for(720, 1280) is None
    with pytest.raises(ValueError, match="view entry"):
        FrameView.from_config({"slicing": {"overlap": 2.0}})

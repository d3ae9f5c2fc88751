"""SORT tracker on hand-made moving boxes: crossing paths, births, deaths."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from detector.video.tracking import Tracker


def box_at(cx: float, cy: float, w: float = 40.0, h: float = 40.0) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def ids_by_det(tracks, n: int) -> list[int | None]:
    out: list[int | None] = [None] * n
    for t in tracks:
        out[t.det_index] = t.track_id
    return out


@pytest.mark.parametrize(("iou_threshold", "same_id"), [(0.30, True), (0.36, False)])
def test_match_needs_iou_at_the_threshold(iou_threshold: float, same_id: bool) -> None:
    """A still box, then a detection shifted by half its width: IoU 50 / 150 = 1/3 with the prediction."""
    tracker = Tracker(iou_threshold=iou_threshold, min_hits=1, max_age=5)
    for _ in range(4):
        (first,) = tracker.update(np.array([[0.0, 0, 10, 10]]), [0.9], [1])
    (moved,) = tracker.update(np.array([[5.0, 0, 15, 10]]), [0.9], [1])
    assert (moved.track_id == first.track_id) is same_id


def test_ids_stable_while_two_objects_cross() -> None:
    """A moves right, B moves left on the same row; their boxes overlap for several frames.

    Detections are listed in a shuffled order each frame, so only the tracker can keep the ids. At
    frame 12 each detection lies closer to the *other* object's previous box (A was at 152, B at
    170; now A is at 164, B at 158): matching on last positions alone would swap the ids, the
    constant-velocity prediction must not.
    """
    tracker = Tracker(iou_threshold=0.1, min_hits=1, max_age=3)
    rng = np.random.default_rng(0)
    first_ids: dict[str, int] = {}
    overlapped = False
    for f in range(30):
        a = box_at(20 + 12 * f, 100)
        b = box_at(302 - 12 * f, 100)
        overlapped |= box_iou(torch.tensor([a]), torch.tensor([b]))[0, 0] > 0.7
        order = rng.permutation(2)
        boxes = np.array([a, b])[order]
        tracks = tracker.update(boxes, np.array([0.9, 0.8])[order], np.array([1, 1]))
        ids = ids_by_det(tracks, 2)
        by_name = {"A" if o == 0 else "B": ids[k] for k, o in enumerate(order)}
        assert None not in by_name.values()
        if f == 0:
            first_ids = by_name
            assert first_ids["A"] != first_ids["B"]
        assert by_name == first_ids, f"ids swapped at frame {f}"
    assert overlapped, "the test's boxes must really overlap"


def test_new_object_gets_new_id_and_vanished_one_is_dropped_after_max_age() -> None:
    max_age = 2
    tracker = Tracker(iou_threshold=0.3, min_hits=1, max_age=max_age)
    a = lambda f: box_at(50 + 5 * f, 50)  # noqa: E731
    c = lambda f: box_at(300, 200 + 3 * f)  # noqa: E731
    for f in range(5):
        (t,) = tracker.update(np.array([a(f)]), np.array([0.9]), np.array([1]))
    id_a = t.track_id

    # A new object appears: new id, A keeps its id.
    tracks = tracker.update(np.array([a(5), c(5)]), np.array([0.9, 0.7]), np.array([1, 2]))
    ids = ids_by_det(tracks, 2)
    assert ids[0] == id_a and ids[1] is not None and ids[1] != id_a
    id_c = ids[1]

    # A vanishes: its track coasts for max_age frames, then is dropped.
    for f in range(6, 6 + max_age):
        tracks = tracker.update(np.array([c(f)]), np.array([0.7]), np.array([2]))
        assert [t.track_id for t in tracks] == [id_c]
        assert tracker.num_tracks == 2  # A still alive (coasting), not reported
    tracks = tracker.update(np.array([c(8)]), np.array([0.7]), np.array([2]))
    assert tracker.num_tracks == 1

    # A comes back where it would have been: too late, so it is a new object with a new id.
    tracks = tracker.update(np.array([a(9), c(9)]), np.array([0.9, 0.7]), np.array([1, 2]))
    ids = ids_by_det(tracks, 2)
    assert ids[1] == id_c
    assert ids[0] not in (None, id_a, id_c)


def test_short_gap_within_max_age_keeps_the_id() -> None:
    tracker = Tracker(min_hits=1, max_age=3)
    for f in range(5):
        (t,) = tracker.update(np.array([box_at(50 + 6 * f, 80)]), [0.9], [1])
    tid = t.track_id
    for _ in range(2):  # missed detections
        assert tracker.update(np.zeros((0, 4)), [], []) == []
    # Reappears where constant velocity puts it (frame 7), not where it was last seen.
    (t,) = tracker.update(np.array([box_at(50 + 6 * 7, 80)]), [0.9], [1])
    assert t.track_id == tid


def test_min_hits_delays_reporting_after_the_first_frames() -> None:
    tracker = Tracker(min_hits=3, max_age=1)
    # The first min_hits frames of a stream report tracks at once.
    for f in range(3):
        assert len(tracker.update(np.array([box_at(50 + 4 * f, 50)]), [0.9], [1])) == 1
    # A later newcomer is reported only from its 3rd consecutive hit.
    reported = []
    for f in range(3, 7):
        tracks = tracker.update(np.array([box_at(50 + 4 * f, 50), box_at(400, 400)]), [0.9, 0.9], [1, 1])
        reported.append(ids_by_det(tracks, 2)[1] is not None)
    assert reported == [False, False, True, True]


def test_different_labels_are_not_matched() -> None:
    tracker = Tracker(min_hits=1, max_age=5)
    (t1,) = tracker.update(np.array([box_at(50, 50)]), [0.9], [1])
    (t2,) = tracker.update(np.array([box_at(50, 50)]), [0.9], [2])
    assert t1.track_id != t2.track_id
    assert Tracker(min_hits=1, class_aware=False).update(np.array([box_at(5, 5)]), [0.5], [1])[0].track_id == 1


def test_track_reports_detection_box_and_validates_input() -> None:
    tracker = Tracker(min_hits=1)
    b = np.array([[10.0, 20.0, 50.0, 80.0]])
    (t,) = tracker.update(b, np.array([0.6]), np.array([3]))
    np.testing.assert_array_equal(t.box, b[0])
    assert (t.score, t.label, t.det_index) == (pytest.approx(0.6), 3, 0)
    with pytest.raises(ValueError):
        tracker.update(b, np.array([0.6, 0.5]), np.array([3]))

"""SORT-style multi-object tracking: a constant-velocity Kalman filter per object + IoU matching.

Written by hand rather than taken from a package: of the maintained PyPI trackers, ``norfair``
pins ``numpy<2``, ``trackers``/``supervision`` pull in ``opencv-python`` (which clashes with our
``opencv-python-headless``) plus ``requests``/``rich``, ``sort-tracker-py`` is GPLv3, and
``motpy``/``bytetracker``/``sort-tracker`` have been unmaintained since 2021-2023. SORT itself is
~150 lines of numpy and scipy, both already dependencies (the IoU is ``torchvision.ops.box_iou``).

Follows Bewley et al., "Simple Online and Realtime Tracking" (2016): the state is the box centre,
area and aspect ratio plus the velocities of the first three; detections are assigned to the
tracks' predicted boxes by Hungarian matching on IoU.

Example::

    tracker = Tracker(max_age=15, min_hits=3)
    for det in detections_per_frame:
        for t in tracker.update(det["boxes"], det["scores"], det["labels"]):
            print(t.track_id, t.box, t.det_index)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

__all__ = ["Track", "Tracker"]


def _xyxy_to_z(box: np.ndarray) -> np.ndarray:
    """xyxy -> measurement ``[cx, cy, area, aspect (w/h)]``."""
    w = max(float(box[2] - box[0]), 1e-6)
    h = max(float(box[3] - box[1]), 1e-6)
    return np.array([box[0] + w / 2, box[1] + h / 2, w * h, w / h])


def _x_to_xyxy(x: np.ndarray) -> np.ndarray:
    """State ``[cx, cy, area, aspect, ...]`` -> xyxy."""
    area, aspect = max(float(x[2]), 1e-6), max(float(x[3]), 1e-6)
    w = np.sqrt(area * aspect)
    h = area / w
    return np.array([x[0] - w / 2, x[1] - h / 2, x[0] + w / 2, x[1] + h / 2])


class _KalmanBox:
    """Constant-velocity Kalman filter on ``[cx, cy, area, aspect, vcx, vcy, varea]``.

    The aspect ratio is modelled as constant (no velocity): objects rarely change shape quickly, and
    a velocity on it makes boxes wobble.
    """

    # Transition: position += velocity each frame. Measurement: the first four state entries.
    _F = np.eye(7)
    _F[0, 4] = _F[1, 5] = _F[2, 6] = 1.0
    _H = np.eye(4, 7)
    # Noise magnitudes as in the SORT paper's reference setup: size measurements are noisier than
    # centres, unobserved velocities start very uncertain, and process noise on velocities is small.
    _R = np.diag([1.0, 1.0, 10.0, 10.0])
    _Q = np.diag([1.0, 1.0, 1.0, 1.0, 0.01, 0.01, 0.0001])
    _P0 = np.diag([10.0, 10.0, 10.0, 10.0, 10000.0, 10000.0, 10000.0])

    def __init__(self, box: np.ndarray) -> None:
        self.x = np.zeros(7)
        self.x[:4] = _xyxy_to_z(box)
        self.P = self._P0.copy()

    def predict(self) -> np.ndarray:
        # An area about to shrink through zero would make the box undefined: stop its shrinking.
        if self.x[2] + self.x[6] <= 0:
            self.x[6] = 0.0
        self.x = self._F @ self.x
        self.P = self._F @ self.P @ self._F.T + self._Q
        return _x_to_xyxy(self.x)

    def update(self, box: np.ndarray) -> None:
        z = _xyxy_to_z(box)
        y = z - self._H @ self.x
        S = self._H @ self.P @ self._H.T + self._R
        K = self.P @ self._H.T @ np.linalg.inv(S)
        self.x = self.x + K @ y
        self.P = (np.eye(7) - K @ self._H) @ self.P

    @property
    def box(self) -> np.ndarray:
        return _x_to_xyxy(self.x)


@dataclass
class Track:
    """One tracked object as :meth:`Tracker.update` reports it.

    Attributes:
        track_id: stable id, 1, 2, 3... in order of creation within one :class:`Tracker`.
        box: ``np.ndarray[4]`` xyxy pixels: the detection matched this frame (not the filter's
            smoothed estimate, which lags on turning objects).
        score: that detection's score.
        label: that detection's label.
        det_index: index of that detection in the ``update`` call's inputs.
        hits: frames in which the track was matched, in total.
        age: frames since the track was created.
    """

    track_id: int
    box: np.ndarray
    score: float
    label: int
    det_index: int
    hits: int
    age: int


class _TrackState:
    def __init__(self, track_id: int, box: np.ndarray, score: float, label: int) -> None:
        self.kf = _KalmanBox(box)
        self.track_id = track_id
        self.label = label
        self.score = score
        self.hits = 1
        self.hit_streak = 1
        self.age = 0
        self.time_since_update = 0


class Tracker:
    """SORT tracker: call :meth:`update` once per frame, with that frame's detections.

    Args:
        iou_threshold: minimum IoU between a track's predicted box and a detection to match them.
        min_hits: a track is reported once matched in this many consecutive frames (during the
            first ``min_hits`` frames of the stream tracks are reported at once, so the first
            frames of a video are not empty).
        max_age: a track not matched for more than this many frames is dropped; an object that
            reappears later gets a new id.
        class_aware: only match detections to tracks of the same label.
    """

    def __init__(
        self,
        iou_threshold: float = 0.3,
        min_hits: int = 3,
        max_age: int = 15,
        class_aware: bool = True,
    ) -> None:
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
        if min_hits < 1 or max_age < 0:
            raise ValueError(f"need min_hits >= 1 and max_age >= 0, got {min_hits}, {max_age}")
        self.iou_threshold = iou_threshold
        self.min_hits = min_hits
        self.max_age = max_age
        self.class_aware = class_aware
        self.reset()

    def reset(self) -> None:
        """Forget every track; ids start again from 1."""
        self._tracks: list[_TrackState] = []
        self._next_id = 1
        self.frame_count = 0

    @property
    def num_tracks(self) -> int:
        """Tracks alive (confirmed or not, matched this frame or coasting)."""
        return len(self._tracks)

    def update(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> list[Track]:
        """Advance one frame.

        Args:
            boxes: ``[N, 4]`` xyxy pixels (N may be 0: every track then coasts one frame).
            scores: ``[N]``.
            labels: ``[N]`` integer class labels.

        Returns:
            The confirmed tracks matched to a detection this frame, in detection order; each
            carries its ``det_index`` into the inputs.
        """
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        lab = np.asarray(labels).reshape(-1).astype(np.int64)
        if not (len(b) == len(s) == len(lab)):
            raise ValueError(f"boxes ({len(b)}), scores ({len(s)}) and labels ({len(lab)}) differ in length")
        self.frame_count += 1

        predicted = np.zeros((len(self._tracks), 4))
        for i, t in enumerate(self._tracks):
            predicted[i] = t.kf.predict()
            t.age += 1
            if t.time_since_update > 0:
                t.hit_streak = 0
            t.time_since_update += 1

        matches, unmatched_dets = self._associate(b, lab, predicted)
        matched_det_of: dict[int, int] = {}
        for ti, di in matches:
            t = self._tracks[ti]
            t.kf.update(b[di])
            t.score = float(s[di])
            t.hits += 1
            t.hit_streak += 1
            t.time_since_update = 0
            matched_det_of[ti] = di
        for di in unmatched_dets:
            self._tracks.append(_TrackState(self._next_id, b[di], float(s[di]), int(lab[di])))
            self._next_id += 1
            matched_det_of[len(self._tracks) - 1] = di

        out: list[Track] = []
        for ti, t in enumerate(self._tracks):
            if t.time_since_update == 0 and (t.hit_streak >= self.min_hits or self.frame_count <= self.min_hits):
                di = matched_det_of[ti]
                out.append(Track(t.track_id, b[di].copy(), float(s[di]), int(lab[di]), di, t.hits, t.age))
        self._tracks = [t for t in self._tracks if t.time_since_update <= self.max_age]
        out.sort(key=lambda tr: tr.det_index)
        return out

    def _associate(
        self, boxes: np.ndarray, labels: np.ndarray, predicted: np.ndarray
    ) -> tuple[list[tuple[int, int]], list[int]]:
        """Hungarian matching maximising IoU; pairs under ``iou_threshold`` stay unmatched."""
        if len(self._tracks) == 0 or len(boxes) == 0:
            return [], list(range(len(boxes)))
        # Predicted boxes always have a positive area (see _x_to_xyxy), so no union is 0.
        iou = box_iou(torch.from_numpy(predicted), torch.from_numpy(boxes)).numpy()
        if self.class_aware:
            track_labels = np.array([t.label for t in self._tracks])
            iou = np.where(track_labels[:, None] == labels[None, :], iou, 0.0)
        rows, cols = linear_sum_assignment(-iou)
        matches = [(int(r), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= max(self.iou_threshold, 1e-9)]
        matched = {c for _, c in matches}
        return matches, [d for d in range(len(boxes)) if d not in matched]

"""Face tracking: stable ids across frames by IoU + keypoint association with motion prediction.

Each track carries a constant-velocity Kalman filter on its box and keypoints (the *motion model*), used to
predict where the face will be in the next frame. Detections are matched to the predicted tracks by the
Hungarian algorithm on ``cost = (1 - IoU) + mean keypoint distance / face size``, gated (a pair is allowed
when ``IoU ≥ iou_threshold`` or the keypoint distance is under ``keypoint_threshold`` face sizes). A track
not matched keeps predicting for up to ``max_missed`` frames (hidden faces, missed detections, two faces
crossing) before it ends; an unmatched detection starts a new track. Separately from the motion model, each
track's output (box and keypoints) goes through the chosen smoother (:mod:`blazeface.video.smoothing`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ops.boxes import box_iou
from ..results import Detections
from .smoothing import DEFAULT_SMOOTHING, KalmanFilter, Smoother, make_face_smoother


def linear_sum_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment (Hungarian algorithm, O(n³)) for a rectangular cost matrix with finite entries.

    Returns ``(rows, cols)`` like :func:`scipy.optimize.linear_sum_assignment`.
    """
    c = np.asarray(cost, dtype=np.float64)
    if c.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    transposed = c.shape[0] > c.shape[1]
    if transposed:
        c = c.T
    n, m = c.shape  # n <= m
    inf = float("inf")
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, dtype=np.int64)  # p[j]: row (1-based) assigned to column j
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            cur = c[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while True:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
            if j0 == 0:
                break
    rows, cols = [], []
    for j in range(1, m + 1):
        if p[j]:
            rows.append(p[j] - 1)
            cols.append(j - 1)
    r, k = np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64)
    if transposed:
        r, k = k, r
    order = np.argsort(r)
    return r[order], k[order]


def _pack(box: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(box, dtype=np.float64).reshape(4), np.asarray(keypoints, dtype=np.float64).reshape(-1)])


def _size(box: np.ndarray) -> float:
    w, h = float(box[2] - box[0]), float(box[3] - box[1])
    return max(1e-3, float(np.sqrt(max(w, 1e-6) * max(h, 1e-6))))


@dataclass
class Track:
    """One tracked face. ``box`` / ``keypoints`` / ``score`` are the latest smoothed output."""

    track_id: int
    motion: KalmanFilter
    smoother: Smoother
    box: np.ndarray
    keypoints: np.ndarray
    score: float
    first_time: float
    last_time: float
    hits: int = 1
    missed: int = 0
    raw_box: np.ndarray = field(default_factory=lambda: np.zeros(4))

    def predict(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """The motion model's box ``[4]`` and keypoints ``[6, 2]`` at time ``t``."""
        v = self.motion.predict(t)
        return v[:4], v[4:].reshape(-1, 2)


class FaceTracker:
    """Assign stable ids to per-frame detections and smooth each track.

    Args:
        smoothing: ``"kalman"`` (default), ``"one-euro"`` or ``"none"``, or a callable returning a new
            :class:`~blazeface.video.smoothing.Smoother` per track.
        smoothing_params: ``{"position": {...}, "shape": {...}}``, parameters of the two filters of each
            track's :class:`~blazeface.video.smoothing.FaceSmoother` (defaults in ``DEFAULT_PARAMS``).
        max_missed: frames a track may go unmatched (predicted forward) before it ends (patience).
        min_hits: matched frames before a track is reported (1: from its first frame).
        iou_threshold: least IoU with the predicted box for a match (unless the keypoints are close).
        keypoint_threshold: greatest mean keypoint distance for a match, in face sizes (unless the IoU is high).
        motion_params: ``measurement_noise`` / ``acceleration_noise`` of the motion model (face units).
    """

    def __init__(self, smoothing: str | Any = DEFAULT_SMOOTHING,
                 smoothing_params: dict[str, dict[str, float]] | None = None,
                 max_missed: int = 15, min_hits: int = 1, iou_threshold: float = 0.1,
                 keypoint_threshold: float = 0.6, motion_params: dict[str, float] | None = None) -> None:
        if max_missed < 0 or min_hits < 1:
            raise ValueError("max_missed must be ≥ 0 and min_hits ≥ 1")
        if callable(smoothing) and not isinstance(smoothing, str):
            self._new_smoother = smoothing
        else:
            sp = dict(smoothing_params or {})
            unknown = set(sp) - {"position", "shape"}
            if unknown:
                raise ValueError(f"smoothing_params takes 'position' and 'shape', got {sorted(unknown)}")
            make_face_smoother(smoothing, sp.get("position"), sp.get("shape"))  # validate now
            self._new_smoother = lambda: make_face_smoother(smoothing, sp.get("position"), sp.get("shape"))
        self.max_missed, self.min_hits = int(max_missed), int(min_hits)
        self.iou_threshold, self.keypoint_threshold = float(iou_threshold), float(keypoint_threshold)
        self.motion_params = {"measurement_noise": 0.02, "acceleration_noise": 8.0, **(motion_params or {})}
        self.tracks: list[Track] = []
        self._next_id = 0

    def reset(self) -> None:
        self.tracks = []
        self._next_id = 0

    def _cost(self, detections: Detections, t: float) -> tuple[np.ndarray, np.ndarray]:
        """``cost [T, D]`` and ``allowed [T, D]`` between live tracks and detections."""
        n_t, n_d = len(self.tracks), len(detections)
        if n_t == 0 or n_d == 0:
            return np.zeros((n_t, n_d)), np.zeros((n_t, n_d), dtype=bool)
        pred = [tr.predict(t) for tr in self.tracks]
        pboxes = np.stack([p[0] for p in pred])
        pkps = np.stack([p[1] for p in pred])  # [T, 6, 2]
        iou = box_iou(pboxes, detections.boxes.astype(np.float64))
        sizes = np.array([_size(b) for b in pboxes])
        dist = np.linalg.norm(pkps[:, None] - detections.keypoints[None].astype(np.float64), axis=-1).mean(-1)
        dist = dist / sizes[:, None]
        allowed = (iou >= self.iou_threshold) | (dist <= self.keypoint_threshold)
        return (1.0 - iou) + dist, allowed

    def update(self, detections: Detections, t: float) -> Detections:
        """Associate one frame's detections (at time ``t`` seconds) with the tracks.

        Returns the reported faces: smoothed boxes and keypoints, the detector's scores, and
        ``extras["track_id"]``, ordered by track id.
        """
        cost, allowed = self._cost(detections, t)
        matches: list[tuple[int, int]] = []
        if cost.size:
            big = 1e6
            rows, cols = linear_sum_assignment(np.where(allowed, cost, big))
            matches = [(int(r), int(c)) for r, c in zip(rows, cols) if allowed[r, c]]
        matched_t = {r for r, _ in matches}
        matched_d = {c for _, c in matches}
        for ti, di in matches:
            tr = self.tracks[ti]
            raw = _pack(detections.boxes[di], detections.keypoints[di])
            scale = _size(raw[:4])
            tr.motion(raw, t, scale)
            out = tr.smoother(raw, t, scale)
            tr.box, tr.keypoints = out[:4], out[4:].reshape(-1, 2)
            tr.raw_box = raw[:4]
            tr.score = float(detections.scores[di])
            tr.last_time = t
            tr.hits += 1
            tr.missed = 0
        for ti, tr in enumerate(self.tracks):
            if ti not in matched_t:
                tr.missed += 1
        self.tracks = [tr for tr in self.tracks if tr.missed <= self.max_missed]
        for di in range(len(detections)):
            if di in matched_d:
                continue
            raw = _pack(detections.boxes[di], detections.keypoints[di])
            scale = _size(raw[:4])
            motion = KalmanFilter(**self.motion_params)
            motion(raw, t, scale)
            smoother = self._new_smoother()
            out = smoother(raw, t, scale)
            self.tracks.append(Track(self._next_id, motion, smoother, out[:4], out[4:].reshape(-1, 2),
                                     float(detections.scores[di]), t, t, raw_box=raw[:4]))
            self._next_id += 1
        shown = [tr for tr in self.tracks if tr.missed == 0 and tr.hits >= self.min_hits]
        shown.sort(key=lambda tr: tr.track_id)
        if not shown:
            res = Detections.empty(detections.image_size, detections.model, detections.path)
            res.extras["track_id"] = []
            return res
        res = Detections(np.stack([tr.box for tr in shown]), np.array([tr.score for tr in shown]),
                         np.stack([tr.keypoints for tr in shown]), detections.image_size, detections.model,
                         detections.path)
        res.extras["track_id"] = [tr.track_id for tr in shown]
        return res

"""Video face detection: decode ahead on a thread, detect in batches, track, smooth, estimate head pose."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ops.boxes import box_iou
from ..preprocess import Letterbox
from ..results import Detections
from .smoothing import DEFAULT_SMOOTHING
from .sources import Frame, Prefetcher, VideoDecodeError, VideoSource, open_source
from .tracking import FaceTracker


@dataclass
class FrameResult:
    """One frame's faces.

    Attributes:
        index: frame index in the source (from 0).
        time: timestamp in seconds.
        faces: the tracked faces: smoothed boxes and keypoints, ``extras["track_id"]`` (and ``"pose"``).
        raw: the detector's own output for the frame (unsmoothed, no ids).
        image: the RGB frame (``None`` unless ``keep_images``).
    """

    index: int
    time: float
    faces: Detections
    raw: Detections
    image: np.ndarray | None = None

    @property
    def track_ids(self) -> list[int]:
        return list(self.faces.extras.get("track_id", []))

    def to_dict(self, decimals: int = 2) -> dict[str, Any]:
        """``{"frame", "time", "faces": [{"track_id", "score", "box", "keypoints", "pose"?}]}``."""
        faces = []
        for face in self.faces.to_dict(decimals)["faces"]:
            faces.append({"track_id": face.pop("track_id", None), **face})
        return {"frame": self.index, "time": round(self.time, 4), "faces": faces}


class VideoDetector:
    """Faces with stable track ids, smoothed boxes and keypoints (and head pose) for every frame of a video.

    Args:
        detector: a :class:`~blazeface.FaceDetector` or a model name (``"short_range"`` suits webcams).
        smoothing: ``"kalman"`` (default), ``"one-euro"`` or ``"none"``.
        smoothing_params: parameters of the smoother (see :mod:`blazeface.video.smoothing`).
        max_missed: frames a track survives without a detection (patience).
        min_hits: frames a track needs before it is reported.
        pose: add ``extras["pose"]`` (yaw, pitch, roll, rotation, translation …) to each face.
        camera_matrix: intrinsics for the pose (default: from the frame size).
        batch_size: frames per forward pass for files (live sources run one frame at a time).
        prefetch: frames decoded ahead on the background thread.
        keep_images: attach each RGB frame to its :class:`FrameResult` (needed to draw or crop).
        roi_tracking: detect each tracked face again in a square around its predicted position (side
            ``roi_scale`` × the face, moved only when the prediction leaves a dead band of ``roi_deadband`` × the
            side), as MediaPipe's trackers crop around the previous result: the face then sits at the same place
            among the network's anchors from frame to frame, which removes most of the slowly varying
            keypoint error that smoothing alone cannot remove without lag. The whole frame is searched as well
            every ``full_every`` frames (default 1: every frame, so new faces show up at once) and whenever a
            tracked face is lost. Frames then run one at a time (each depends on the last); ``False`` detects
            whole frames only, in batches.
        tracker_params: more :class:`~blazeface.video.tracking.FaceTracker` arguments.

    >>> for r in VideoDetector("short_range")("clip.mp4"):
    ...     print(r.index, r.time, r.track_ids, r.faces.keypoints)
    """

    def __init__(self, detector: Any = "short_range", smoothing: str = DEFAULT_SMOOTHING,
                 smoothing_params: dict[str, float] | None = None, max_missed: int = 15, min_hits: int = 1,
                 pose: bool = False, camera_matrix: np.ndarray | None = None, batch_size: int = 8,
                 prefetch: int = 16, keep_images: bool = True, roi_tracking: bool = True, roi_scale: float = 2.0,
                 roi_deadband: float = 0.03, full_every: int = 1, **tracker_params: Any) -> None:
        if isinstance(detector, str):
            from ..detector import FaceDetector

            detector = FaceDetector(detector)
        self.detector = detector
        self.tracker_args = dict(smoothing=smoothing, smoothing_params=smoothing_params, max_missed=max_missed,
                                 min_hits=min_hits, **tracker_params)
        FaceTracker(**self.tracker_args)  # validate the arguments now
        self.pose = pose
        self.camera_matrix = camera_matrix
        self.batch_size = max(1, int(batch_size))
        self.prefetch = max(1, int(prefetch))
        self.keep_images = keep_images
        self.roi_tracking = roi_tracking
        self.roi_scale = float(roi_scale)
        self.roi_deadband = float(roi_deadband)
        self.full_every = max(1, int(full_every))
        self._rois: dict[int, Letterbox] = {}
        self._centers: dict[int, np.ndarray] = {}
        self._since_full = 0
        self.tracker: FaceTracker | None = None
        self.source: VideoSource | None = None

    def __call__(self, source: Any, fps: float | None = None) -> Iterator[FrameResult]:
        return self.track(source, fps)

    def track(self, source: Any, fps: float | None = None) -> Iterator[FrameResult]:
        """Yield a :class:`FrameResult` per frame of ``source`` (see :func:`~blazeface.video.open_source`).

        A source that fails part-way raises :class:`~blazeface.video.VideoDecodeError` after the results of
        every frame decoded before the failure.
        """
        src = open_source(source, fps=fps)
        self.source = src
        self.tracker = FaceTracker(**self.tracker_args)
        self._rois, self._centers, self._since_full = {}, {}, 0
        batch = 1 if src.live or self.roi_tracking else self.batch_size
        return self._run(src, batch)

    def _run(self, src: VideoSource, batch: int) -> Iterator[FrameResult]:
        pending: list[Frame] = []
        error: BaseException | None = None
        prefetcher = Prefetcher(src, maxsize=max(self.prefetch, batch))
        try:
            frames = iter(prefetcher)
            while True:
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except VideoDecodeError as exc:
                    error = exc
                    break
                pending.append(frame)
                if len(pending) >= batch:
                    yield from self._process(pending)
                    pending = []
            yield from self._process(pending)
        finally:
            prefetcher.close()
            src.close()
        if error is not None:
            raise error

    def _process(self, frames: list[Frame]) -> Iterator[FrameResult]:
        if not frames:
            return
        if self.roi_tracking:
            raws = [self._detect_tracked(f) for f in frames]
        else:
            raws = self.detector.detect_tensors([f.image for f in frames])  # numpy fast path on the CPU
        assert self.tracker is not None
        for frame, raw in zip(frames, raws):
            faces = self.tracker.update(raw, frame.time)
            if self.pose:
                from ..pose import add_pose

                add_pose(faces, self.camera_matrix)
            yield FrameResult(frame.index, frame.time, faces, raw, frame.image if self.keep_images else None)

    def _roi(self, track: Any, width: int, height: int) -> Letterbox:
        """The square to search for ``track`` in the next frame: around its smoothed box moved on by the box's
        last per-frame motion, and kept as long as that stays inside the dead band."""
        box = track.box
        center = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        previous = self._centers.get(track.track_id)
        self._centers[track.track_id] = center
        cx, cy = center + (center - previous if previous is not None else 0.0)
        side = max(box[2] - box[0], box[3] - box[1], 1.0) * self.roi_scale
        old = self._rois.get(track.track_id)
        if old is not None:
            ox, oy = old.x0 + old.side / 2, old.y0 + old.side / 2
            if (max(abs(cx - ox), abs(cy - oy)) <= self.roi_deadband * old.side
                    and abs(side / old.side - 1) <= 0.1):
                return old
        roi = Letterbox(width, height, self.detector.input_size, cx - side / 2, cy - side / 2, side)
        self._rois[track.track_id] = roi
        return roi

    def _detect_tracked(self, frame: Frame) -> Detections:
        """One frame's detections: each live track searched in its own square, the whole frame when due."""
        assert self.tracker is not None
        image = frame.image
        height, width = image.shape[:2]
        tracks = [tr for tr in self.tracker.tracks if tr.missed == 0]
        live = {tr.track_id for tr in tracks}
        self._rois = {k: v for k, v in self._rois.items() if k in live}
        self._centers = {k: v for k, v in self._centers.items() if k in live}
        regions = [self._roi(tr, width, height) for tr in tracks]
        full = not tracks or self._since_full + 1 >= self.full_every
        results = self.detector.detect_tensors([image] * len(regions), regions=regions) if regions else []
        found = [r[:1] for r in results if len(r)]  # the tracked face: the best detection in its square
        if len(found) < len(regions):
            full = True  # a tracked face was lost: search the whole frame
        if full:
            self._since_full = 0
            whole = self.detector.detect_tensors([image])[0]
            if found:
                tracked = np.concatenate([f.boxes for f in found])
                overlap = box_iou(whole.boxes, tracked).max(axis=1) > 0.3 if len(whole) else np.zeros(0, bool)
                whole = whole[np.flatnonzero(~overlap)]
            found.append(whole)
        else:
            self._since_full += 1
        if not found:
            return Detections.empty((width, height), self.detector.model_name)
        merged = Detections(np.concatenate([f.boxes for f in found]), np.concatenate([f.scores for f in found]),
                            np.concatenate([f.keypoints for f in found]), (width, height), self.detector.model_name)
        order = np.argsort(-merged.scores, kind="stable")  # two squares may hold the same face: keep it once
        keep: list[int] = []
        for i in order:
            if not keep or box_iou(merged.boxes[i:i + 1], merged.boxes[keep]).max() <= 0.5:
                keep.append(int(i))
        return merged[sorted(keep)]


def track(source: Any, detector: Any = "short_range", **kwargs: Any) -> Iterator[FrameResult]:
    """``VideoDetector(detector, **kwargs)(source)``."""
    return VideoDetector(detector, **kwargs)(source)

"""Video face detection: decode ahead on a thread, detect in batches, track, smooth, estimate head pose."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

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
        tracker_params: more :class:`~blazeface.video.tracking.FaceTracker` arguments.

    >>> for r in VideoDetector("short_range")("clip.mp4"):
    ...     print(r.index, r.time, r.track_ids, r.faces.keypoints)
    """

    def __init__(self, detector: Any = "short_range", smoothing: str = DEFAULT_SMOOTHING,
                 smoothing_params: dict[str, float] | None = None, max_missed: int = 15, min_hits: int = 1,
                 pose: bool = False, camera_matrix: np.ndarray | None = None, batch_size: int = 8,
                 prefetch: int = 16, keep_images: bool = True, **tracker_params: Any) -> None:
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
        batch = 1 if src.live else self.batch_size
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
        raws = self.detector.detect_tensors([f.image for f in frames])  # numpy fast path on the CPU
        assert self.tracker is not None
        for frame, raw in zip(frames, raws):
            faces = self.tracker.update(raw, frame.time)
            if self.pose:
                from ..pose import add_pose

                add_pose(faces, self.camera_matrix)
            yield FrameResult(frame.index, frame.time, faces, raw, frame.image if self.keep_images else None)


def track(source: Any, detector: Any = "short_range", **kwargs: Any) -> Iterator[FrameResult]:
    """``VideoDetector(detector, **kwargs)(source)``."""
    return VideoDetector(detector, **kwargs)(source)

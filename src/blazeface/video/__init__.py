"""Video: frame sources, face tracking with stable ids, smoothing, and a batched :class:`VideoDetector`.

>>> from blazeface.video import VideoDetector
>>> for result in VideoDetector("short_range", pose=True)("clip.mp4"):
...     result.index, result.time, result.track_ids, result.faces.keypoints, result.faces.extras["pose"]
"""

from .detector import FrameResult, VideoDetector, track
from .smoothing import (DEFAULT_PARAMS, DEFAULT_SMOOTHING, FaceSmoother, KalmanFilter, NoSmoothing, OneEuroFilter,
                        make_face_smoother, make_smoother)
from .sources import (ArraySource, Frame, ImageSequenceSource, OpenCVSource, Prefetcher, PyAVSource,
                      VideoDecodeError, VideoSource, open_source)
from .tracking import FaceTracker, Track, linear_sum_assignment

__all__ = [
    "FrameResult", "VideoDetector", "track", "DEFAULT_PARAMS", "DEFAULT_SMOOTHING", "FaceSmoother",
    "make_face_smoother", "KalmanFilter", "NoSmoothing", "OneEuroFilter",
    "make_smoother", "ArraySource", "Frame", "ImageSequenceSource", "OpenCVSource", "Prefetcher", "PyAVSource",
    "VideoDecodeError", "VideoSource", "open_source", "FaceTracker", "Track", "linear_sum_assignment",
]

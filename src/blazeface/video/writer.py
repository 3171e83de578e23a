"""Drawing tracked faces on frames and writing annotated videos (PyAV, else OpenCV)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..results import KEYPOINT_COLORS

_TRACK_COLORS = ((0, 255, 0), (255, 160, 0), (0, 200, 255), (255, 0, 200), (200, 255, 0), (160, 100, 255),
                 (255, 255, 255), (255, 80, 80))


def track_color(track_id: int | None) -> tuple[int, int, int]:
    return (0, 255, 0) if track_id is None else _TRACK_COLORS[int(track_id) % len(_TRACK_COLORS)]


def annotate(image: np.ndarray, result: Any, draw_pose: bool = True) -> np.ndarray:
    """Draw a :class:`~blazeface.video.FrameResult`'s faces (box coloured by track id, keypoints, id, and the
    head's axes when it has a pose) on a copy of ``image``; returns RGB ``uint8``."""
    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    faces = result.faces
    ids = faces.extras.get("track_id", [None] * len(faces))
    poses = faces.extras.get("pose", [None] * len(faces))
    lw = max(1, round(max(faces.image_size) / 320))
    radius = max(2, lw + 1)
    for i in range(len(faces)):
        color = track_color(ids[i])
        x1, y1, x2, y2 = (float(v) for v in faces.boxes[i])
        draw.rectangle([x1, y1, x2, y2], outline=color, width=lw)
        for k, (x, y) in enumerate(faces.keypoints[i]):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=KEYPOINT_COLORS[k])
        label = f"#{ids[i]}" if ids[i] is not None else ""
        pose = poses[i] if i < len(poses) else None
        if pose:
            label += f" y{pose['yaw']:+.0f} p{pose['pitch']:+.0f} r{pose['roll']:+.0f}"
            if draw_pose:
                rot = np.asarray(pose["rotation"], dtype=np.float64)
                nose = faces.keypoints[i][2]
                length = 0.6 * (x2 - x1)
                for axis, c in zip(range(3), ((255, 0, 0), (0, 255, 0), (0, 0, 255))):
                    d = rot[:, axis]
                    if axis == 2:
                        d = -d  # draw the facing direction (towards the camera)
                    draw.line([(nose[0], nose[1]), (nose[0] + length * d[0], nose[1] + length * d[1])], fill=c,
                              width=lw + 1)
        if label:
            draw.text((x1 + lw, max(0.0, y1 - 12 - lw)), label, fill=color)
    return np.asarray(canvas)


class VideoWriter:
    """Write RGB frames to a video file: PyAV (H.264 in MP4/MKV) when installed, else OpenCV (mp4v)."""

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self.size = (int(size[0]), int(size[1]))
        self._av = self._cv = None
        try:
            import av
        except ImportError:
            av = None
        if av is not None:
            from fractions import Fraction

            self._container = av.open(str(self.path), "w")
            codec = "libx264" if self.path.suffix.lower() in (".mp4", ".mkv", ".mov", ".m4v") else "mpeg4"
            self._stream = self._container.add_stream(codec, rate=Fraction(self.fps).limit_denominator(1001))
            # yuv420p needs even sizes; odd frames are padded by one pixel
            self._stream.width = self.size[0] + self.size[0] % 2
            self._stream.height = self.size[1] + self.size[1] % 2
            self._stream.pix_fmt = "yuv420p"
            self._av = av
        else:
            import cv2

            self._cv = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self._cv.isOpened():
                raise OSError(f"{self.path}: cannot open for writing")

    def write(self, image: np.ndarray) -> None:
        img = np.ascontiguousarray(image)
        if self._av is not None:
            h, w = self._stream.height, self._stream.width
            if img.shape[0] != h or img.shape[1] != w:
                padded = np.zeros((h, w, 3), dtype=np.uint8)
                padded[:img.shape[0], :img.shape[1]] = img[:h, :w]
                img = padded
            frame = self._av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        else:
            self._cv.write(np.ascontiguousarray(img[:, :, ::-1]))

    def close(self) -> None:
        if self._av is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._av = None
        elif self._cv is not None:
            self._cv.release()
            self._cv = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Per-image detection results: boxes, scores, named keypoints, in the original image's pixels."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np
from PIL import Image, ImageDraw


class FaceKeypoint(IntEnum):
    """The six BlazeFace keypoints in MediaPipe's order. Left/right are the *subject's*:
    ``RIGHT_EYE`` is the subject's right eye, on the viewer's left in an unmirrored photo."""

    RIGHT_EYE = 0
    LEFT_EYE = 1
    NOSE_TIP = 2
    MOUTH_CENTER = 3
    RIGHT_EAR_TRAGION = 4
    LEFT_EAR_TRAGION = 5


#: Keypoint order after a horizontal mirror: the subject's right eye becomes the left one (0 <-> 1), same for the
#: ear tragions (4 <-> 5); ``mirrored_keypoints = keypoints[..., FLIP_KEYPOINTS, :]``.
FLIP_KEYPOINTS: tuple[int, ...] = tuple(int(k) for k in (
    FaceKeypoint.LEFT_EYE, FaceKeypoint.RIGHT_EYE, FaceKeypoint.NOSE_TIP, FaceKeypoint.MOUTH_CENTER,
    FaceKeypoint.LEFT_EAR_TRAGION, FaceKeypoint.RIGHT_EAR_TRAGION))


KEYPOINT_COLORS = ((255, 64, 64), (64, 64, 255), (64, 255, 64), (255, 255, 0), (255, 128, 255), (0, 255, 255))


@dataclass
class Detections:
    """The faces found in one image.

    Attributes:
        boxes: ``float32[N, 4]`` as ``(x1, y1, x2, y2)`` in pixels of the original image.
        scores: ``float32[N]`` in ``[0, 1]``, highest first.
        keypoints: ``float32[N, 6, 2]`` as ``(x, y)`` pixels, in :class:`FaceKeypoint` order.
        image_size: ``(width, height)`` of the image.
        model: the model that produced them.
        path: the file they came from, if any.

    ``len(d) == 0`` when no face was found; a :class:`Detections` is never ``None``.
    """

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray
    image_size: tuple[int, int]
    model: str | None = None
    path: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32).reshape(-1, len(FaceKeypoint), 2)
        if not len(self.boxes) == len(self.scores) == len(self.keypoints):
            raise ValueError("boxes, scores and keypoints must have the same length")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    @classmethod
    def empty(cls, image_size: tuple[int, int], model: str | None = None, path: str | None = None) -> "Detections":
        """No faces."""
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 6, 2)), image_size, model, path)

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index: int | slice | np.ndarray | list[int]) -> "Detections":
        """A subset of faces (an int keeps one face as a length-1 result)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(self.boxes[index], self.scores[index], self.keypoints[index],
                          self.image_size, self.model, self.path)

    def __repr__(self) -> str:
        return f"Detections({len(self)} faces, image_size={self.image_size}, model={self.model!r})"

    # --- box formats -------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.image_size[0]

    @property
    def height(self) -> int:
        return self.image_size[1]

    @property
    def xyxy(self) -> np.ndarray:
        """``(x1, y1, x2, y2)`` pixels."""
        return self.boxes

    @property
    def xywh(self) -> np.ndarray:
        """``(x1, y1, w, h)`` pixels."""
        return np.concatenate([self.boxes[:, :2], self.boxes[:, 2:] - self.boxes[:, :2]], axis=1)

    @property
    def cxcywh(self) -> np.ndarray:
        """``(cx, cy, w, h)`` pixels."""
        return np.concatenate([(self.boxes[:, :2] + self.boxes[:, 2:]) / 2, self.boxes[:, 2:] - self.boxes[:, :2]], axis=1)

    @property
    def _scale(self) -> np.ndarray:
        return np.array([self.width, self.height], dtype=np.float32)

    @property
    def xyxyn(self) -> np.ndarray:
        """``(x1, y1, x2, y2)`` normalized by the image size."""
        return self.boxes / np.tile(self._scale, 2)

    @property
    def xywhn(self) -> np.ndarray:
        """``(x1, y1, w, h)`` normalized by the image size (MediaPipe's ``relative_bounding_box``)."""
        return self.xywh / np.tile(self._scale, 2)

    @property
    def keypoints_normalized(self) -> np.ndarray:
        """Keypoints normalized by the image size (MediaPipe's ``relative_keypoints``)."""
        return self.keypoints / self._scale

    def keypoint(self, which: FaceKeypoint | int | str) -> np.ndarray:
        """``float32[N, 2]`` pixels of one named keypoint for every face, e.g. ``d.keypoint("nose_tip")``."""
        if isinstance(which, str):
            which = FaceKeypoint[which.upper()]
        return self.keypoints[:, int(which)]

    def to_legacy(self) -> np.ndarray:
        """``float32[N, 17]`` as the first public PyTorch port returned: ``ymin, xmin, ymax, xmax``,
        six keypoints ``(x, y)``, score; all normalized by the image size."""
        b = self.xyxyn
        return np.concatenate(
            [b[:, [1, 0, 3, 2]], self.keypoints_normalized.reshape(-1, 12), self.scores[:, None]], axis=1
        ).astype(np.float32)

    # --- serialization ----------------------------------------------------------------------
    def to_dict(self, decimals: int = 2) -> dict[str, Any]:
        """JSON-ready dict: ``{"width", "height", "model", "faces": [{"score", "box", "keypoints"}]}``."""
        faces = []
        for i in range(len(self)):
            face: dict[str, Any] = {
                "score": round(float(self.scores[i]), 5),
                "box": [round(float(v), decimals) for v in self.boxes[i]],
                "keypoints": [[round(float(x), decimals), round(float(y), decimals)] for x, y in self.keypoints[i]],
            }
            for key, values in self.extras.items():
                if i < len(values) and values[i] is not None:
                    face[key] = values[i]
            faces.append(face)
        out: dict[str, Any] = {"width": self.width, "height": self.height, "model": self.model, "faces": faces}
        if self.path is not None:
            out = {"path": self.path, **out}
        return out

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), **kwargs)

    # --- drawing ----------------------------------------------------------------------------
    def plot(self, image: Image.Image | np.ndarray | str | None = None, box_color: tuple[int, int, int] = (0, 255, 0),
             line_width: int | None = None, show_scores: bool = True) -> Image.Image:
        """Draw boxes, keypoints and scores on ``image`` (or on a blank canvas of the image size).

        Returns a new RGB :class:`PIL.Image.Image`; the input is not modified.
        """
        if image is None and self.path is not None:
            image = self.path
        if image is None:
            canvas = Image.new("RGB", self.image_size, (0, 0, 0))
        else:
            from .io import load_image

            canvas = Image.fromarray(load_image(image))
        if canvas.size != self.image_size:
            raise ValueError(f"image is {canvas.size[0]}×{canvas.size[1]}, detections are for {self.width}×{self.height}")
        draw = ImageDraw.Draw(canvas)
        lw = line_width or max(1, round(max(self.image_size) / 300))
        radius = max(2, lw + 1)
        for i in range(len(self)):
            x1, y1, x2, y2 = (float(v) for v in self.boxes[i])
            draw.rectangle([x1, y1, x2, y2], outline=box_color, width=lw)
            for k, (x, y) in enumerate(self.keypoints[i]):
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=KEYPOINT_COLORS[k])
            if show_scores:
                draw.text((x1 + lw, max(0.0, y1 - 12 - lw)), f"{self.scores[i]:.2f}", fill=box_color)
        return canvas

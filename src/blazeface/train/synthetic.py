"""Synthetic compositions: labelled faces pasted at known places on backgrounds, labels carried exactly.

A face is cut out as a square around its box, resized, and pasted; its box and keypoints go through the same
scale and shift (``new = (old - crop_origin) * scale + paste_origin``), so the composition's labels follow
from the source labels and the paste geometry alone, with no detector involved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .data import Sample


@dataclass(frozen=True)
class Paste:
    """Put face ``face`` of ``source`` so that its box's side is ``side`` pixels with its centre at ``(cx, cy)``."""

    source: int
    face: int
    side: float
    cx: float
    cy: float
    #: the square cut around the face, as a multiple of the face box's side.
    context: float = 1.6


def background(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth random colour gradient with mild noise, ``uint8 [H, W, 3]``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        a, b, base = rng.uniform(-0.4, 0.4, 2), rng.uniform(0, 2 * np.pi), rng.uniform(60, 190)
        img[..., c] = base + 50 * np.sin(a[0] * xx / 10 + a[1] * yy / 10 + b)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def compose(canvas: np.ndarray, sources: Sequence[tuple[np.ndarray, Sample]], pastes: Sequence[Paste], path: str
            ) -> tuple[np.ndarray, Sample]:
    """Paste faces of labelled ``sources`` (``(image, sample)``) onto ``canvas``; returns the image and its labels.

    Faces of the source that fall inside a cut-out but are not the pasted one are not labelled: keep
    ``context`` small enough that cut-outs hold one face.
    """
    out = canvas.copy()
    height, width = out.shape[:2]
    boxes, kps, masks = [], [], []
    for p in pastes:
        img, sample = sources[p.source]
        box = sample.boxes[p.face]
        face_side = float(np.sqrt((box[2] - box[0]) * (box[3] - box[1])))
        crop_side = int(round(face_side * p.context))
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        x0, y0 = int(round(cx - crop_side / 2)), int(round(cy - crop_side / 2))
        h, w = img.shape[:2]
        padded = np.zeros((crop_side, crop_side, 3), np.uint8)  # the cut-out, zero outside the source
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + crop_side, w), min(y0 + crop_side, h)
        padded[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = img[sy0:sy1, sx0:sx1]
        scale = p.side / face_side
        new_side = int(round(crop_side * scale))
        scale = new_side / crop_side
        patch = np.asarray(Image.fromarray(padded).resize((new_side, new_side), Image.Resampling.BILINEAR))
        px0 = int(round(p.cx - (cx - x0) * scale))
        py0 = int(round(p.cy - (cy - y0) * scale))
        dx0, dy0, dx1, dy1 = max(px0, 0), max(py0, 0), min(px0 + new_side, width), min(py0 + new_side, height)
        out[dy0:dy1, dx0:dx1] = patch[dy0 - py0:dy1 - py0, dx0 - px0:dx1 - px0]
        origin = np.array([x0, y0], np.float32)
        dest = np.array([px0, py0], np.float32)
        boxes.append(((box.reshape(2, 2) - origin) * scale + dest).reshape(4))
        kps.append((sample.keypoints[p.face] - origin) * scale + dest)
        masks.append(sample.keypoint_mask[p.face])
    n = len(boxes)
    return out, Sample(path, np.array(boxes, np.float32).reshape(n, 4), np.array(kps, np.float32).reshape(n, 6, 2),
                       np.array(masks, bool).reshape(n, 6), size=(width, height))


def samples_from_mediapipe_json(data: dict, root: str, model: str = "short_range") -> list[Sample]:
    """Labels from a ``mediapipe_*.json`` reference file (relative boxes and keypoints) as pixel samples."""
    out = []
    for name, entry in sorted(data["images"].items()):
        w, h = entry["size_wh"]
        faces = entry.get(model, [])
        boxes = np.array([[f["xmin"] * w, f["ymin"] * h, (f["xmin"] + f["width"]) * w, (f["ymin"] + f["height"]) * h]
                          for f in faces], np.float32).reshape(-1, 4)
        kps = np.array([[[x * w, y * h] for x, y in f["keypoints"]] for f in faces], np.float32).reshape(-1, 6, 2)
        out.append(Sample(f"{root}/{name}", boxes, kps, size=(w, h)))
    return out

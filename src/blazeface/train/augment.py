"""Training augmentations that move boxes and keypoints with the pixels.

One training example is made in three steps, all in the network input's frame:

1. **Crop / zoom / letterbox**: a square region of the image is resampled to ``S×S`` with the
   MediaPipe-exact letterbox (:func:`blazeface.preprocess.letterbox_numpy`), the same arithmetic as at
   inference. Either the whole image (MediaPipe's centred letterbox, jittered in scale and position) or a
   zoom on one face, sized so that the face's side falls log-uniformly in the model's face-size range.
2. **Horizontal flip** (keypoints 0↔1 and 4↔5 swap: the subject's right eye becomes the left one) and
   **rotation** up to ±45° about the input's centre; boxes of rotated faces are the bounding box of the
   ellipse inscribed in the face box (a rotated square face stays square, not a 41% larger box).
3. **Colour jitter**: brightness, contrast, saturation, on the ``uint8`` pixels.

Normalized coordinates ``t`` put pixel ``j`` of the input at ``t = j / S`` (the letterbox samples source
``u = t * side + x0``), so every transform here is exact to the sub-pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..preprocess import Letterbox, letterbox_numpy
from ..results import FLIP_KEYPOINTS
from .data import Sample


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the augmentations (``AugmentConfig.off()`` disables all)."""

    zoom_prob: float = 0.5
    #: face side, as a fraction of the input, that zooms aim for (``None``: the model's range).
    face_range: tuple[float, float] | None = None
    #: whole-image letterbox: side scaled by up to this factor (zoom out), shifted at random.
    scale_jitter: float = 0.25
    flip_prob: float = 0.5
    rotate_prob: float = 0.3
    max_rotation: float = 45.0
    color_prob: float = 0.8
    brightness: float = 0.25
    contrast: float = 0.3
    saturation: float = 0.3
    #: a face less visible than this inside the input after cropping is ignored (not a positive).
    min_visible: float = 0.6

    @classmethod
    def off(cls) -> "AugmentConfig":
        return cls(zoom_prob=0.0, scale_jitter=0.0, flip_prob=0.0, rotate_prob=0.0, color_prob=0.0)


@dataclass
class Target:
    """Labels of one training input, normalized to the input (``[0, 1]`` spans it).

    ``boxes float32[M, 4]`` ``(x1, y1, x2, y2)``, ``keypoints float32[M, 6, 2]``, ``keypoint_mask bool[M, 6]``,
    ``ignore bool[M]``.
    """

    boxes: np.ndarray
    keypoints: np.ndarray
    keypoint_mask: np.ndarray
    ignore: np.ndarray


def _region_for_face(width: int, height: int, size: int, box: np.ndarray, face_range: tuple[float, float],
                     rng: np.random.Generator) -> Letterbox:
    """A square region in which ``box``'s side is a log-uniform fraction of ``face_range`` and that holds it."""
    face = float(np.sqrt(max(box[2] - box[0], 1e-3) * max(box[3] - box[1], 1e-3)))
    lo, hi = face_range
    target = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    side = face / target
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    # the face's centre anywhere in the middle of the square, keeping its box inside where it fits
    half = max(0.0, (side - face) / 2)
    x0 = cx - side / 2 + rng.uniform(-half, half)
    y0 = cy - side / 2 + rng.uniform(-half, half)
    return Letterbox(width, height, size, float(x0), float(y0), float(side))


def _whole_image_region(width: int, height: int, size: int, jitter: float, rng: np.random.Generator) -> Letterbox:
    box = Letterbox.centered(width, height, size)
    if jitter <= 0:
        return box
    side = box.side * (1.0 + rng.uniform(0, jitter))
    x0 = box.x0 - (side - box.side) * rng.uniform(0, 1)
    y0 = box.y0 - (side - box.side) * rng.uniform(0, 1)
    return Letterbox(width, height, size, float(x0), float(y0), float(side))


def _ellipse_boxes(centers: np.ndarray, half_wh: np.ndarray, angle: float) -> np.ndarray:
    c, s = abs(math.cos(angle)), abs(math.sin(angle))
    hw = np.sqrt((half_wh[:, 0] * c) ** 2 + (half_wh[:, 1] * s) ** 2)
    hh = np.sqrt((half_wh[:, 0] * s) ** 2 + (half_wh[:, 1] * c) ** 2)
    return np.stack([centers[:, 0] - hw, centers[:, 1] - hh, centers[:, 0] + hw, centers[:, 1] + hh], -1)


def _color_jitter(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32)
    if cfg.saturation > 0:
        grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
        x = grey[..., None] + (x - grey[..., None]) * rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
    if cfg.contrast > 0:
        mean = x.mean()
        x = mean + (x - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
    if cfg.brightness > 0:
        x = x + 255.0 * rng.uniform(-cfg.brightness, cfg.brightness) * 0.5
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def make_example(image: np.ndarray, sample: Sample, size: int, cfg: AugmentConfig, rng: np.random.Generator,
                 face_range: tuple[float, float] = (0.1, 0.75), min_face: float = 0.0
                 ) -> tuple[np.ndarray, Target, Letterbox]:
    """One augmented training input from an RGB ``uint8 [H, W, 3]`` image and its labels.

    Returns ``float32[3, S, S]`` in ``[-1, 1]``, its :class:`Target`, and the region sampled. Faces whose
    side (``sqrt(w h)``) is below ``min_face`` of the input, or that are less than ``cfg.min_visible``
    inside it, become *ignored*.
    """
    height, width = image.shape[:2]
    valid = np.flatnonzero(~sample.ignore)
    face_range = cfg.face_range or face_range
    if len(valid) and rng.uniform() < cfg.zoom_prob:
        region = _region_for_face(width, height, size, sample.boxes[rng.choice(valid)], face_range, rng)
    else:
        region = _whole_image_region(width, height, size, cfg.scale_jitter, rng)
    tensor, _ = letterbox_numpy(image, size, region)
    offset = np.array([region.x0, region.y0], np.float32)
    side = np.float32(region.side)
    boxes = ((sample.boxes.reshape(-1, 2, 2) - offset) / side).reshape(-1, 4)
    kps = (sample.keypoints - offset) / side
    kp_mask = sample.keypoint_mask.copy()
    ignore = sample.ignore.copy()

    flip = rng.uniform() < cfg.flip_prob
    angle = math.radians(rng.uniform(-cfg.max_rotation, cfg.max_rotation)) if rng.uniform() < cfg.rotate_prob else 0.0
    color = rng.uniform() < cfg.color_prob
    if flip or angle or color:
        pixels = np.rint((tensor + 1.0) * 127.5).astype(np.uint8).transpose(1, 2, 0)  # exact: inputs are uint8 levels
        if flip:
            pixels = pixels[:, ::-1]
            last = (size - 1) / size  # pixel j -> S - 1 - j
            boxes = np.stack([last - boxes[:, 2], boxes[:, 1], last - boxes[:, 0], boxes[:, 3]], -1)
            kps = kps[:, FLIP_KEYPOINTS]
            kps[..., 0] = last - kps[..., 0]
            kp_mask = kp_mask[:, FLIP_KEYPOINTS]
        if angle:
            # rotate by `angle` (counter-clockwise on screen) about pixel (S-1)/2; PIL maps output -> input
            c, s = math.cos(angle), math.sin(angle)
            mid = size / 2.0  # PIL's continuous coordinates put pixel j's centre at j + 0.5
            a, b = c, -s
            d, e = s, c
            coeffs = (a, b, mid - a * mid - b * mid, d, e, mid - d * mid - e * mid)
            pixels = np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).transform(
                (size, size), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=(0, 0, 0)))
            centre = (size - 1) / (2.0 * size)

            def rot(p: np.ndarray) -> np.ndarray:  # forward map of points (inverse of the PIL map)
                x, y = p[..., 0] - centre, p[..., 1] - centre
                return np.stack([c * x + s * y + centre, -s * x + c * y + centre], -1)

            kps = rot(kps).astype(np.float32)
            centers = rot((boxes[:, :2] + boxes[:, 2:]) / 2)
            boxes = _ellipse_boxes(centers, (boxes[:, 2:] - boxes[:, :2]) / 2, angle).astype(np.float32)
        if color:
            pixels = _color_jitter(pixels, cfg, rng)
        tensor = pixels.transpose(2, 0, 1).astype(np.float32) * np.float32(2.0 / 255.0) - 1.0

    # faces mostly outside the input are dropped, partly outside or too small are ignored
    wh = np.clip(boxes[:, 2:] - boxes[:, :2], 1e-9, None)
    inside = np.clip(np.minimum(boxes[:, 2:], 1.0) - np.maximum(boxes[:, :2], 0.0), 0, None)
    visible = inside.prod(-1) / wh.prod(-1)
    keep = visible > 0.05
    ignore = ignore | (visible < cfg.min_visible) | (np.sqrt(wh.prod(-1)) < min_face)
    target = Target(boxes[keep].astype(np.float32), kps[keep].astype(np.float32), kp_mask[keep], ignore[keep])
    return np.ascontiguousarray(tensor, dtype=np.float32), target, region

"""Anonymized copies (faces pixelated or blurred) and simple face crops, on decoded RGB arrays.

Face crops are :func:`blazeface.align.aligned_crops` (eyes level, MediaPipe's detection-to-ROI), as for
``blazeface detect --crops``.
"""

from __future__ import annotations

import io
import posixpath
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter

from ..results import Detections

BlurMode = Literal["pixelate", "gaussian"]

_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
            ".tiff": "TIFF"}


def _region(box: np.ndarray, margin: float, width: int, height: int) -> tuple[int, int, int, int] | None:
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    x1, y1, x2, y2 = x1 - margin * w, y1 - margin * h, x2 + margin * w, y2 + margin * h
    r = (max(0, int(np.floor(x1))), max(0, int(np.floor(y1))), min(width, int(np.ceil(x2))), min(height, int(np.ceil(y2))))
    return r if r[2] > r[0] and r[3] > r[1] else None


def anonymize(image: np.ndarray, detections: Detections, mode: BlurMode = "pixelate", margin: float = 0.25,
              blocks: int = 6) -> np.ndarray:
    """A copy of ``image`` (RGB ``uint8`` ``[H, W, 3]``) with every detected face, enlarged by ``margin`` of its
    size on each side, pixelated into about ``blocks`` cells across or blurred (radius a sixth of its size).

    Identity is gone, not the head's outline: BlazeFace itself may still find a (low-score) "face" there."""
    out = Image.fromarray(np.ascontiguousarray(image))
    for box in detections.boxes:
        r = _region(box, margin, out.width, out.height)
        if r is None:
            continue
        patch = out.crop(r)
        if mode == "pixelate":
            cell = max(1.0, max(patch.width, patch.height) / blocks)
            small = (max(1, round(patch.width / cell)), max(1, round(patch.height / cell)))
            patch = patch.resize(small, Image.BOX).resize(patch.size, Image.NEAREST)
        elif mode == "gaussian":
            patch = patch.filter(ImageFilter.GaussianBlur(max(2.0, max(patch.width, patch.height) / 6)))
        else:
            raise ValueError(f"unknown blur mode {mode!r} (pixelate, gaussian)")
        out.paste(patch, r[:2])
    return np.asarray(out)


def encode(image: np.ndarray, name: str) -> tuple[bytes, str]:
    """``(encoded bytes, file name)``: the format of ``name``'s extension when PIL writes it, else PNG."""
    stem, ext = posixpath.splitext(name)
    fmt = _FORMATS.get(ext.lower())
    if fmt is None:
        fmt, name = "PNG", name + ".png"
    buf = io.BytesIO()
    kwargs = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    Image.fromarray(image).save(buf, fmt, **kwargs)
    return buf.getvalue(), name

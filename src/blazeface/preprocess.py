"""MediaPipe-exact letterboxing of images of any size into the network's square input.

MediaPipe's CPU path warps the centred square ROI of side ``max(W, H)`` into the ``S×S`` tensor with
OpenCV (bilinear, constant-zero border), on ``uint8`` pixels, then maps to ``[-1, 1]``. This module
reproduces that arithmetic: tensor pixel ``j`` samples source coordinate ``u = j * side / S + x0``
(no half-pixel term), ``u`` is rounded to 1/32 pixel and the four neighbours are blended with
OpenCV's integer weights ``(32 - f)(32 - g)…/1024``, rounded half up to ``uint8``; outside the
image the pixels are 0, which becomes -1.0 after ``x / 127.5 - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

INTER_TAB_SIZE = 32  # OpenCV's INTER_BITS = 5


@dataclass(frozen=True)
class Letterbox:
    """Where the ``size × size`` network input sits in an image of ``width × height`` pixels.

    The input covers the square of side ``side`` whose top-left corner is ``(x0, y0)`` in source
    pixels; a normalized tensor coordinate ``t`` maps to source pixels as ``t * side + (x0, y0)``.
    :meth:`centered` is MediaPipe's letterbox (``side = max(W, H)``, centred, so ``x0`` or ``y0`` is
    negative along the shorter axis); any other square (a tile) works the same way.
    """

    width: int
    height: int
    size: int
    x0: float
    y0: float
    side: float

    @classmethod
    def centered(cls, width: int, height: int, size: int) -> "Letterbox":
        side = max(width, height)
        return cls(width, height, size, (width - side) / 2.0, (height - side) / 2.0, float(side))

    def to_image(self, xy: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Normalized tensor coordinates ``[..., 2]`` (x, y) → source pixels (numpy or torch, as given)."""
        if isinstance(xy, np.ndarray):
            return xy * np.float32(self.side) + np.array([self.x0, self.y0], dtype=xy.dtype)
        return xy * self.side + torch.tensor([self.x0, self.y0], dtype=xy.dtype, device=xy.device)


def _taps(length: int, out: int, start: float, step: float, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Integer source indices (left/right neighbour), their validity, and the 1/32 fraction."""
    coord = torch.arange(out, dtype=torch.float64, device=device) * step + start
    fixed = torch.round(coord * INTER_TAB_SIZE).to(torch.int64)
    idx = torch.div(fixed, INTER_TAB_SIZE, rounding_mode="floor")
    frac = (fixed - idx * INTER_TAB_SIZE).to(torch.float32)
    idx1 = idx + 1
    valid0 = (idx >= 0) & (idx < length)
    valid1 = (idx1 >= 0) & (idx1 < length)
    return idx.clamp(0, length - 1), idx1.clamp(0, length - 1), valid0, valid1, frac


def letterbox(image: torch.Tensor, size: int, region: Letterbox | None = None) -> tuple[torch.Tensor, Letterbox]:
    """Letterbox one image exactly as MediaPipe does (or resample another square ``region`` of it).

    Args:
        image: ``Tensor[H, W, 3]`` (RGB), ``uint8`` or float in ``[0, 255]``, on any device.
        size: the network's input side ``S``.
        region: the square to sample; ``None`` is :meth:`Letterbox.centered` (MediaPipe's letterbox).

    Returns:
        ``Tensor[3, S, S]`` float32 in ``[-1, 1]`` (padding -1.0) on the image's device, and the
        :class:`Letterbox` that maps results back.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"letterbox expects an [H, W, 3] image, got shape {tuple(image.shape)}")
    height, width = int(image.shape[0]), int(image.shape[1])
    box = Letterbox.centered(width, height, size) if region is None else region
    if (box.width, box.height, box.size) != (width, height, size):
        raise ValueError(f"region is for a {box.width}×{box.height} image at {box.size}px, got {width}×{height} at {size}px")
    step = box.side / size
    dev = image.device
    x0i, x1i, vx0, vx1, fx = _taps(width, size, box.x0, step, dev)
    y0i, y1i, vy0, vy1, fy = _taps(height, size, box.y0, step, dev)
    t = float(INTER_TAB_SIZE)
    wy = ((t - fy) * vy0, fy * vy1)  # [S] each; invalid taps weigh 0 (constant-zero border)
    wx = ((t - fx) * vx0, fx * vx1)
    acc = torch.zeros(size, size, 3, dtype=torch.float32, device=dev)
    for yi, w_row in zip((y0i, y1i), wy):
        rows = image.index_select(0, yi)  # [S, W, 3], still in the input dtype
        for xi, w_col in zip((x0i, x1i), wx):
            acc += rows.index_select(1, xi).to(torch.float32) * (w_row[:, None, None] * w_col[None, :, None])
    pixels = torch.floor((acc + 512.0) / 1024.0)  # OpenCV rounds its fixed-point sum half up
    tensor = (pixels * np.float32(2.0 / 255.0) - 1.0).permute(2, 0, 1).contiguous()
    return tensor, box


def letterbox_batch(images: list[torch.Tensor], size: int, regions: list[Letterbox] | None = None
                    ) -> tuple[torch.Tensor, list[Letterbox]]:
    """Letterbox a list of differently sized ``[H, W, 3]`` images into one ``Tensor[B, 3, S, S]``.

    ``regions`` (one per image, e.g. tiles of the same image) replace the centred letterbox.
    """
    if not images:
        raise ValueError("letterbox_batch needs at least one image")
    out = []
    boxes = []
    for i, img in enumerate(images):
        t, b = letterbox(img, size, regions[i] if regions is not None else None)
        out.append(t)
        boxes.append(b)
    return torch.stack(out), boxes


def _fixed_point(out: int, start: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinates ``start + j * step`` of ``out`` tensor pixels rounded to 1/32 pixel: the integer left tap
    and the fraction in 32nds (``int64[out]`` each)."""
    fixed = np.round((np.arange(out, dtype=np.float64) * step + start) * INTER_TAB_SIZE).astype(np.int64)
    idx = np.floor_divide(fixed, INTER_TAB_SIZE)
    return idx, fixed - idx * INTER_TAB_SIZE


def _axis_taps(length: int, out: int, start: float, step: float) -> tuple[np.ndarray, ...]:
    idx, frac = _fixed_point(out, start, step)
    w0 = (INTER_TAB_SIZE - frac) * ((idx >= 0) & (idx < length))
    w1 = frac * ((idx + 1 >= 0) & (idx + 1 < length))
    return np.clip(idx, 0, length - 1), np.clip(idx + 1, 0, length - 1), w0, w1


@lru_cache(maxsize=64)
def sampling_table(box: Letterbox) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the flattened ``[H*W*3]`` image, ``intp[4, 3, S*S]`` (tap, channel, pixel), and integer-valued
    weights ``float32[4, 1, S*S]`` (summing to 1024 inside the image) of the four bilinear taps of every
    input pixel; cached per :class:`Letterbox`."""
    step = box.side / box.size
    x0, x1, wx0, wx1 = _axis_taps(box.width, box.size, box.x0, step)
    y0, y1, wy0, wy1 = _axis_taps(box.height, box.size, box.y0, step)
    pixel = np.stack([(y[:, None] * box.width + x[None, :]).reshape(-1) for y in (y0, y1) for x in (x0, x1)])
    idx = (pixel[:, None, :] * 3 + np.arange(3)[None, :, None]).astype(np.intp)
    w = np.stack([(a[:, None] * b[None, :]).reshape(-1) for a in (wy0, wy1) for b in (wx0, wx1)])
    return idx, w[:, None, :].astype(np.float32)


@lru_cache(maxsize=128)
def remap_tables(box: Letterbox) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV fixed-point maps for ``cv2.remap``: ``int16[S, S, 2]`` integer source ``(x, y)`` of every input pixel's
    top-left tap and ``uint16[S, S]`` interpolation-table index ``fy * 32 + fx`` (the same 1/32 fractions as
    :func:`sampling_table`); cached per :class:`Letterbox`."""
    step = box.side / box.size
    xi, fx = _fixed_point(box.size, box.x0, step)
    yi, fy = _fixed_point(box.size, box.y0, step)
    xy = np.empty((box.size, box.size, 2), dtype=np.int16)
    xy[..., 0] = np.clip(xi, -_INT16_LIMIT, _INT16_LIMIT)[None, :]  # beyond the image either way: zeros
    xy[..., 1] = np.clip(yi, -_INT16_LIMIT, _INT16_LIMIT)[:, None]
    frac = (fy[:, None] * INTER_TAB_SIZE + fx[None, :]).astype(np.uint16)
    return xy, frac


_INT16_LIMIT = 32000  # cv2.remap takes int16 maps and images below 32767 pixels a side
_cv2: object | None | bool = False  # False: not looked up yet; None: not installed


def _opencv() -> object | None:
    global _cv2
    if _cv2 is False:
        try:
            import cv2
        except ImportError:
            cv2 = None
        _cv2 = cv2
    return _cv2  # type: ignore[return-value]


def _resample_opencv(cv2: object, image: np.ndarray, box: Letterbox) -> np.ndarray:
    """``uint8[S, S, 3]``: OpenCV's fixed-point bilinear remap (integer weights ``(32 - f)(32 - g)…`` scaled by 32,
    rounded half up, constant-zero border) at :func:`remap_tables`' taps: the same integers as the numpy path."""
    xy, frac = remap_tables(box)
    return cv2.remap(np.ascontiguousarray(image), xy, frac, cv2.INTER_LINEAR,  # type: ignore[attr-defined]
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)  # type: ignore[attr-defined]


def _resample_numpy(image: np.ndarray, box: Letterbox) -> np.ndarray:
    """``float32[3, S, S]`` holding the resampled ``uint8`` values (gather of :func:`sampling_table`' taps)."""
    idx, w = sampling_table(box)
    taps = np.take(np.ascontiguousarray(image).reshape(-1), idx).astype(np.float32)  # [4, 3, S*S]
    acc = taps[0] * w[0]
    for k in range(1, 4):
        acc += taps[k] * w[k]
    acc += 512.0
    acc *= 1.0 / 1024.0
    np.floor(acc, out=acc)  # OpenCV's fixed-point rounding, half up
    return acc.reshape(3, box.size, box.size)


def letterbox_numpy(image: np.ndarray, size: int, region: Letterbox | None = None,
                    out: np.ndarray | None = None, use_opencv: bool | None = None) -> tuple[np.ndarray, Letterbox]:
    """:func:`letterbox` for an RGB ``uint8`` array ``[H, W, 3]`` on the CPU, bit-identical and faster.

    Writes ``float32[3, S, S]`` into ``out`` when given (e.g. a slice of a preallocated batch). Resampling runs in
    ``cv2.remap`` when OpenCV is installed (``use_opencv=None``), with maps that give OpenCV exactly the taps and
    weights computed here, else in numpy (a gather of the four taps; the fixed-point sums are integers below 2**24,
    so float32 holds them exactly). Both give the same ``uint8`` values (tested).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"letterbox_numpy expects a uint8 [H, W, 3] array, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    box = Letterbox.centered(width, height, size) if region is None else region
    if out is None:
        out = np.empty((3, size, size), dtype=np.float32)
    scale = np.float32(2.0 / 255.0)
    cv2 = _opencv() if use_opencv is not False else None
    if use_opencv and cv2 is None:
        raise ImportError("use_opencv=True needs OpenCV: pip install opencv-python-headless")
    if (width, height, box.x0, box.y0, box.side) == (size, size, 0.0, 0.0, size):  # identity: no resampling
        np.multiply(image.transpose(2, 0, 1), scale, out=out, dtype=np.float32)
    elif cv2 is not None and max(width, height) < _INT16_LIMIT:
        np.multiply(_resample_opencv(cv2, image, box).transpose(2, 0, 1), scale, out=out, dtype=np.float32)
    else:
        np.multiply(_resample_numpy(image, box), scale, out=out)
    np.subtract(out, np.float32(1.0), out=out)
    return out, box

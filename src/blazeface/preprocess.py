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

import torch

INTER_TAB_SIZE = 32  # OpenCV's INTER_BITS = 5


@dataclass(frozen=True)
class Letterbox:
    """How an image of ``width × height`` sits in the ``size × size`` network input.

    ``side = max(width, height)``; the square's top-left corner in source pixels is ``(x0, y0)``
    (negative along the shorter axis). A normalized tensor coordinate ``t`` maps to source pixels
    as ``t * side + x0``.
    """

    width: int
    height: int
    size: int

    @property
    def side(self) -> int:
        return max(self.width, self.height)

    @property
    def x0(self) -> float:
        return (self.width - self.side) / 2.0

    @property
    def y0(self) -> float:
        return (self.height - self.side) / 2.0

    def to_image(self, xy: torch.Tensor) -> torch.Tensor:
        """Normalized tensor coordinates ``Tensor[..., 2]`` (x, y) → source pixels."""
        offset = torch.tensor([self.x0, self.y0], dtype=xy.dtype, device=xy.device)
        return xy * self.side + offset


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


def letterbox(image: torch.Tensor, size: int) -> tuple[torch.Tensor, Letterbox]:
    """Letterbox one image exactly as MediaPipe does.

    Args:
        image: ``Tensor[H, W, 3]`` (RGB), ``uint8`` or float in ``[0, 255]``, on any device.
        size: the network's input side ``S``.

    Returns:
        ``Tensor[3, S, S]`` float32 in ``[-1, 1]`` (padding -1.0) on the image's device, and the
        :class:`Letterbox` that maps results back.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"letterbox expects an [H, W, 3] image, got shape {tuple(image.shape)}")
    height, width = int(image.shape[0]), int(image.shape[1])
    box = Letterbox(width, height, size)
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
    tensor = (pixels / 127.5 - 1.0).permute(2, 0, 1).contiguous()
    return tensor, box


def letterbox_batch(images: list[torch.Tensor], size: int) -> tuple[torch.Tensor, list[Letterbox]]:
    """Letterbox a list of differently sized ``[H, W, 3]`` images into one ``Tensor[B, 3, S, S]``."""
    if not images:
        raise ValueError("letterbox_batch needs at least one image")
    out = []
    boxes = []
    for img in images:
        t, b = letterbox(img, size)
        out.append(t)
        boxes.append(b)
    return torch.stack(out), boxes

"""Synthetic clips with known ground truth: face patches cut from photos, pasted at known sub-pixel positions.

A :class:`FacePatch` is a square crop around a face with a feathered elliptical alpha mask. :func:`render`
warps patches onto a background with a sub-pixel translation (bicubic resampling of the patch, so the true
position of every point of the patch is known to a fraction of a pixel) and adds sensor noise. Used by the
jitter benchmark and the tests; no file is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class FacePatch:
    """RGB ``float32[S, S, 3]`` and alpha ``float32[S, S]`` of a face; ``center`` is where the patch centre
    was in the source photo (pixels, continuous coordinates)."""

    rgb: np.ndarray
    alpha: np.ndarray
    center: tuple[float, float]

    @property
    def size(self) -> int:
        return int(self.rgb.shape[0])


def cut_face(image: np.ndarray, box: Sequence[float], margin: float = 1.7, size: int | None = None,
             feather: float = 0.15) -> FacePatch:
    """A square patch centred on ``box`` (xyxy) of side ``margin × max(box side)``, resized to ``size``."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = margin * max(x2 - x1, y2 - y1)
    out = int(round(side)) if size is None else int(size)
    img = torch.as_tensor(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None]
    h, w = image.shape[:2]
    u = (torch.arange(out, dtype=torch.float64) + 0.5) / out * side
    gx = ((cx - side / 2 + u) / w) * 2 - 1
    gy = ((cy - side / 2 + u) / h) * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None].float()
    rgb = F.grid_sample(img, grid, mode="bicubic", padding_mode="border", align_corners=False)[0]
    yy, xx = np.mgrid[0:out, 0:out]
    r = np.sqrt(((xx + 0.5) / out - 0.5) ** 2 / 0.46 ** 2 + ((yy + 0.5) / out - 0.5) ** 2 / 0.5 ** 2)
    alpha = np.clip((1.0 - r) / feather, 0.0, 1.0).astype(np.float32)
    return FacePatch(rgb.permute(1, 2, 0).clamp(0, 255).numpy().astype(np.float32), alpha, (cx, cy))


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, mildly textured background ``float32[H, W, 3]`` (no face-like structure)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([90 + 60 * xx / width, 110 + 40 * yy / height, 130 - 30 * xx / width], -1)
    low = rng.normal(0, 12, (height // 16 + 2, width // 16 + 2, 3)).astype(np.float32)
    low_t = torch.as_tensor(low).permute(2, 0, 1)[None]
    up = F.interpolate(low_t, size=(height, width), mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()
    return np.clip(base + up, 0, 255).astype(np.float32)


def render(bg: np.ndarray, patches: Sequence[FacePatch], positions: Sequence[tuple[float, float]],
           scales: Sequence[float] | None = None, noise: float = 0.0, rng: np.random.Generator | None = None
           ) -> np.ndarray:
    """Paste each patch (in order: later ones occlude earlier ones) with its centre at ``positions[i]``
    (continuous pixels, sub-pixel accurate) and size ``scales[i] × patch.size``; add Gaussian noise."""
    h, w = bg.shape[:2]
    out = torch.as_tensor(bg, dtype=torch.float32).permute(2, 0, 1).clone()
    for i, (patch, (px, py)) in enumerate(zip(patches, positions)):
        s = 1.0 if scales is None else float(scales[i])
        side = patch.size * s
        x0, y0 = int(np.floor(px - side / 2)) - 2, int(np.floor(py - side / 2)) - 2
        x1, y1 = int(np.ceil(px + side / 2)) + 2, int(np.ceil(py + side / 2)) + 2
        xs, ys = max(0, x0), max(0, y0)
        xe, ye = min(w, x1), min(h, y1)
        if xe <= xs or ye <= ys:
            continue
        # output pixel centre (j + 0.5) -> patch continuous coordinate ((j + 0.5) - (px - side / 2)) / s
        u = ((torch.arange(xs, xe, dtype=torch.float64) + 0.5) - (px - side / 2)) / s
        v = ((torch.arange(ys, ye, dtype=torch.float64) + 0.5) - (py - side / 2)) / s
        gx = u / patch.size * 2 - 1
        gy = v / patch.size * 2 - 1
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None].float()
        src = torch.cat([torch.as_tensor(patch.rgb).permute(2, 0, 1), torch.as_tensor(patch.alpha)[None] * 255], 0)
        warped = F.grid_sample(src[None], grid, mode="bicubic", padding_mode="zeros", align_corners=False)[0]
        a = (warped[3:4] / 255).clamp(0, 1)
        region = out[:, ys:ye, xs:xe]
        out[:, ys:ye, xs:xe] = region * (1 - a) + warped[:3].clamp(0, 255) * a
    img = out.permute(1, 2, 0).numpy()
    if noise > 0:
        img = img + (rng or np.random.default_rng()).normal(0, noise, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)

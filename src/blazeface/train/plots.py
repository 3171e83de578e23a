"""Line charts of training curves as PNG, drawn with Pillow (no plotting library needed)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
          (227, 119, 194), (127, 127, 127))


def _nice(v: float) -> str:
    if v == 0 or not math.isfinite(v):
        return "0"
    return f"{v:.3g}"


def line_plot(series: Mapping[str, Sequence[tuple[float, float]]], path: str | Path, title: str = "",
              xlabel: str = "epoch", ylabel: str = "", log_y: bool = False, size: tuple[int, int] = (720, 440)
              ) -> Path:
    """Plot named series of ``(x, y)`` points (non-finite points skipped) into a PNG; returns its path."""
    path = Path(path)
    w, h = size
    left, right, top, bottom = 70, 170, 36, 46
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()

    def fy(v: float) -> float:
        return math.log10(v) if log_y else v

    pts = {k: [(float(x), float(y)) for x, y in v if math.isfinite(y) and (y > 0 or not log_y)]
           for k, v in series.items()}
    xs = [x for v in pts.values() for x, _ in v]
    ys = [fy(y) for v in pts.values() for _, y in v]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    y0, y1 = (min(ys), max(ys)) if ys else (0.0, 1.0)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (w - left - right), h - bottom - (fy(y) - y0) / (y1 - y0) * (h - top - bottom))

    draw.rectangle([left, top, w - right, h - bottom], outline=(0, 0, 0))
    for i in range(5):  # ticks
        yv = y0 + (y1 - y0) * i / 4
        yy = h - bottom - (h - top - bottom) * i / 4
        draw.line([left - 4, yy, left, yy], fill=(0, 0, 0))
        draw.line([left, yy, w - right, yy], fill=(230, 230, 230))
        draw.text((4, yy - 6), _nice(10 ** yv if log_y else yv), fill=(0, 0, 0), font=font)
        xv = x0 + (x1 - x0) * i / 4
        xx = left + (w - left - right) * i / 4
        draw.line([xx, h - bottom, xx, h - bottom + 4], fill=(0, 0, 0))
        draw.text((xx - 10, h - bottom + 6), _nice(xv), fill=(0, 0, 0), font=font)
    draw.text((left, 10), title, fill=(0, 0, 0), font=font)
    draw.text(((w - right + left) / 2 - 15, h - 18), xlabel, fill=(0, 0, 0), font=font)
    draw.text((4, 22), ylabel, fill=(0, 0, 0), font=font)
    for i, (name, v) in enumerate(pts.items()):
        color = COLORS[i % len(COLORS)]
        coords = [px(x, y) for x, y in v]
        if len(coords) > 1:
            draw.line(coords, fill=color, width=2)
        for cx, cy in coords if len(coords) < 60 else []:
            draw.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=color)
        ly = top + 16 * i
        draw.line([w - right + 10, ly + 6, w - right + 30, ly + 6], fill=color, width=3)
        draw.text((w - right + 36, ly), name, fill=(0, 0, 0), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path

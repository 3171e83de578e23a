"""FDDB: the ellipse annotation format and the discrete ROC score.

Annotations (``FDDB-fold-XX-ellipseList.txt``): per image its path (no extension), the face count, then one line
per face ``major_axis_radius minor_axis_radius angle center_x center_y 1``. Detections (FDDB's output format):
per image its path, a count, then ``left top width height score`` lines.

Discrete score, as FDDB's ``evaluate``: a detection and a face match when the overlap (area of intersection over
area of union) of the detection rectangle and the annotated ellipse exceeds 0.5; each face is matched at most
once and each detection at most once. Here the matching is greedy by descending detection score, each detection
taking the unmatched ellipse of highest overlap (FDDB solves a bipartite matching per score cut-off; greedy
matching gives the same counts whenever a detection overlaps at most one ellipse above 0.5, which with
``0.5`` and non-overlapping faces is the usual case). The ROC is true positives (as a fraction of faces)
against the count of false positives, at every distinct score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Ellipse:
    major: float  # major axis radius
    minor: float
    angle: float  # radians
    cx: float
    cy: float

    def bbox(self) -> tuple[float, float, float, float]:
        """Axis-aligned bounding box ``x1, y1, x2, y2`` of the ellipse."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        hw = math.sqrt((self.major * c) ** 2 + (self.minor * s) ** 2)
        hh = math.sqrt((self.major * s) ** 2 + (self.minor * c) ** 2)
        return self.cx - hw, self.cy - hh, self.cx + hw, self.cy + hh

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        c, s = math.cos(self.angle), math.sin(self.angle)
        dx, dy = x - self.cx, y - self.cy
        u = dx * c + dy * s
        v = -dx * s + dy * c
        return (u / self.major) ** 2 + (v / self.minor) ** 2 <= 1.0


def read_fddb_ellipses(path: str | Path) -> dict[str, list[Ellipse]]:
    """An FDDB ``ellipseList`` file → image path → ellipses."""
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    out: dict[str, list[Ellipse]] = {}
    i = 0
    while i < len(lines):
        name, count = lines[i], int(lines[i + 1])
        faces = []
        for ln in lines[i + 2:i + 2 + count]:
            a, b, ang, cx, cy = (float(v) for v in ln.split()[:5])
            faces.append(Ellipse(a, b, ang, cx, cy))
        out[name] = faces
        i += 2 + count
    return out


def read_fddb_detections(path: str | Path) -> dict[str, np.ndarray]:
    """FDDB detection output → image path → ``[N, 5]`` ``x, y, w, h, score``."""
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    out: dict[str, np.ndarray] = {}
    i = 0
    while i < len(lines):
        name, count = lines[i], int(lines[i + 1])
        rows = [[float(v) for v in ln.split()[:5]] for ln in lines[i + 2:i + 2 + count]]
        out[name] = np.array(rows, dtype=np.float64).reshape(-1, 5)
        i += 2 + count
    return out


def ellipse_rect_iou(e: Ellipse, rect: np.ndarray, samples: int = 64) -> float:
    """Overlap of an ellipse and an ``x, y, w, h`` rectangle, by sampling the union's bounding box on a
    ``samples × samples`` grid of cell centres (FDDB rasterizes on the pixel grid)."""
    x, y, w, h = (float(v) for v in rect[:4])
    ex1, ey1, ex2, ey2 = e.bbox()
    x1, y1, x2, y2 = min(x, ex1), min(y, ey1), max(x + w, ex2), max(y + h, ey2)
    if w <= 0 or h <= 0 or x + w <= ex1 or ex2 <= x or y + h <= ey1 or ey2 <= y:
        return 0.0
    gx = x1 + (np.arange(samples) + 0.5) * (x2 - x1) / samples
    gy = y1 + (np.arange(samples) + 0.5) * (y2 - y1) / samples
    xx, yy = np.meshgrid(gx, gy)
    in_e = e.contains(xx, yy)
    in_r = (xx >= x) & (xx <= x + w) & (yy >= y) & (yy <= y + h)
    union = np.count_nonzero(in_e | in_r)
    return float(np.count_nonzero(in_e & in_r) / union) if union else 0.0


@dataclass
class FDDBResult:
    """Discrete ROC: at each score cut-off, true positive rate and number of false positives."""

    tpr: np.ndarray
    false_positives: np.ndarray
    thresholds: np.ndarray
    num_faces: int

    def tpr_at(self, fp: int) -> float:
        """True positive rate with at most ``fp`` false positives (the usual FDDB summary: ``fp=1000``)."""
        ok = self.false_positives <= fp
        return float(self.tpr[ok].max()) if ok.any() else 0.0


def evaluate_fddb(ellipses: dict[str, list[Ellipse]], detections: dict[str, np.ndarray],
                  iou_threshold: float = 0.5, samples: int = 64) -> FDDBResult:
    """The discrete ROC of ``detections`` against FDDB ellipses (see the module docstring)."""
    scores, tps = [], []
    num_faces = sum(len(v) for v in ellipses.values())
    for name, faces in ellipses.items():
        d = detections.get(name, np.zeros((0, 5)))
        d = d[np.argsort(-d[:, 4], kind="stable")]
        used = np.zeros(len(faces), dtype=bool)
        for row in d:
            ious = np.array([0.0 if used[k] else ellipse_rect_iou(f, row, samples) for k, f in enumerate(faces)])
            k = int(ious.argmax()) if len(ious) else -1
            hit = k >= 0 and ious[k] > iou_threshold
            if hit:
                used[k] = True
            scores.append(row[4])
            tps.append(hit)
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(tps, dtype=bool)
    order = np.argsort(-s, kind="stable")
    s, t = s[order], t[order]
    cuts = np.unique(s)[::-1]
    upto = np.searchsorted(-s, -cuts, side="right")
    tp_cum = np.concatenate([[0], np.cumsum(t)])[upto]
    fp_cum = upto - tp_cum
    return FDDBResult(tp_cum / max(num_faces, 1), fp_cum, cuts, num_faces)

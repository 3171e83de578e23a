"""The WIDER FACE evaluation protocol, as the official toolbox computes it.

This follows the official WIDER FACE evaluation code (the MATLAB ``eval_tools`` of the benchmark and its
widely used Python port ``widerface_evaluate``) step by step:

1. **Scores** are min–max normalized over the whole detection set (``norm_score``), so the lowest score is 0
   and the highest 1.
2. **Matching**, per image, detections in descending score: a detection's *best* ground-truth box is the one of
   highest IoU among *all* faces of the image.
   If that IoU is ``>= iou_threshold``:

   - best face outside the setting (or invalid): the detection is *ignored* — neither a true nor a false
     positive (matching it neither helps nor hurts);
   - best face in the setting and not yet found: a true positive (the face is recalled);
   - best face in the setting and already found: a false positive (a duplicate).

   Any other detection is a false positive.
3. **PR curve** at ``thresholds`` score cut-offs ``1 - t/1000`` (``t = 1..1000``): precision = recalled faces /
   counted (non-ignored) detections with score ≥ cut-off, recall = recalled faces / faces in the setting.
4. **AP** is the area under the *interpolated* PR curve (VOC style, ``voc_ap``): precision is made monotone by
   taking, at each recall, the maximum precision at any higher recall, then integrated over recall.

One deliberate difference, by default: IoU is computed on continuous boxes (``x2 = x + w``, area ``w * h``).
The toolbox adds one pixel to every width and height (``pixel_offset=1.0`` restores it), which slightly favours
small boxes. The shared data's README numbers for MediaPipe (AP 0.090 / 0.040 / 0.012 short range,
0.285 / 0.133 / 0.042 full range sparse) are the continuous-IoU ones; the toolbox's ``+1`` gives
0.090 / 0.040 / 0.012 and 0.287 / 0.134 / 0.042.

Two toolbox quirks are kept because they define the published numbers: images with no face at all are
skipped (their detections count for nothing), and detections whose best match is an already-found face
count as false positives even if they overlap another, unfound face. ``thresholds=None`` uses every distinct
score as a cut-off (the exact curve instead of the toolbox's 1000 steps); ``normalize=False`` keeps raw
scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .data import GroundTruth

SETTINGS = ("easy", "medium", "hard")


def box_iou_xywh(dets: np.ndarray, gts: np.ndarray, pixel_offset: float = 0.0) -> np.ndarray:
    """IoU ``[N, M]`` of ``(x, y, w, h)`` boxes, sizes measured as ``x2 - x1 + pixel_offset``
    (``pixel_offset=1`` is the toolbox's ``+1`` pixel convention)."""
    d = np.asarray(dets, dtype=np.float64).reshape(-1, 4)
    g = np.asarray(gts, dtype=np.float64).reshape(-1, 4)
    dx2, dy2 = d[:, 0] + d[:, 2], d[:, 1] + d[:, 3]
    gx2, gy2 = g[:, 0] + g[:, 2], g[:, 1] + g[:, 3]
    iw = np.minimum(dx2[:, None], gx2[None]) - np.maximum(d[:, None, 0], g[None, :, 0]) + pixel_offset
    ih = np.minimum(dy2[:, None], gy2[None]) - np.maximum(d[:, None, 1], g[None, :, 1]) + pixel_offset
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_d = (d[:, 2] + pixel_offset) * (d[:, 3] + pixel_offset)
    area_g = (g[:, 2] + pixel_offset) * (g[:, 3] + pixel_offset)
    union = area_d[:, None] + area_g[None] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def match_image(dets: np.ndarray, gt_boxes: np.ndarray, keep: np.ndarray, iou_threshold: float = 0.5,
                pixel_offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Match one image's detections (``[N, 5]`` ``x, y, w, h, score``, sorted by descending score) to its faces.

    Args:
        gt_boxes: ``[M, 4]`` ``x, y, w, h``; keep: ``bool[M]``, the faces of the setting.

    Returns:
        ``counted: bool[N]`` (False for detections matched to an ignored face) and
        ``true_positive: bool[N]`` (the detection that first found a face of the setting).
    """
    n = len(dets)
    counted = np.ones(n, dtype=bool)
    tp = np.zeros(n, dtype=bool)
    if n == 0 or len(gt_boxes) == 0:
        return counted, tp
    overlaps = box_iou_xywh(dets[:, :4], gt_boxes, pixel_offset)
    found = np.zeros(len(gt_boxes), dtype=bool)
    best = overlaps.argmax(1)
    best_iou = overlaps[np.arange(n), best]
    for h in range(n):
        if best_iou[h] < iou_threshold:
            continue
        g = best[h]
        if not keep[g]:
            counted[h] = False
        elif not found[g]:
            found[g] = True
            tp[h] = True
    return counted, tp


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the interpolated PR curve, as the toolbox's ``voc_ap``: precision replaced by its running
    maximum from the right (the best precision at any recall at least as high), summed over recall steps.
    Points of undefined precision (no detection above the cut-off, ``nan``) carry no area."""
    mrec = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64), [1.0]])
    mpre = np.concatenate([[0.0], np.nan_to_num(np.asarray(precision, dtype=np.float64), nan=0.0), [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def normalize_scores(dets: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Min–max normalize the score column over all images (the toolbox's ``norm_score``).
    A constant score becomes 1.0 (the toolbox would divide by zero)."""
    scores = [d[:, 4] for d in dets.values() if len(d)]
    out = {k: np.array(v, dtype=np.float64).reshape(-1, 5) for k, v in dets.items()}
    if not scores:
        return out
    all_scores = np.concatenate(scores)
    lo, hi = float(all_scores.min()), float(all_scores.max())
    for v in out.values():
        if len(v):
            v[:, 4] = (v[:, 4] - lo) / (hi - lo) if hi > lo else 1.0
    return out


@dataclass
class SettingResult:
    """One setting's outcome: AP, the PR curve (one point per cut-off), and counts."""

    setting: str
    ap: float
    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray
    num_faces: int
    num_found: int  # faces of the setting found at the lowest cut-off
    num_detections: int  # counted detections at the lowest cut-off

    def to_dict(self, curve: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"ap": round(self.ap, 6) if np.isfinite(self.ap) else None, "faces": self.num_faces, "found": self.num_found,
                               "detections": self.num_detections}
        if curve:
            out["precision"] = [None if not np.isfinite(p) else round(float(p), 5) for p in self.precision]
            out["recall"] = [round(float(r), 5) for r in self.recall]
            out["thresholds"] = [round(float(t), 5) for t in self.thresholds]
        return out


@dataclass
class EvalResult:
    """The outcome of :func:`evaluate`: one :class:`SettingResult` per setting."""

    settings: dict[str, SettingResult]
    num_images: int
    num_detections: int
    missing_images: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def ap(self) -> dict[str, float]:
        return {k: v.ap for k, v in self.settings.items()}

    def __getitem__(self, setting: str) -> SettingResult:
        return self.settings[setting]

    def to_dict(self, curve: bool = True) -> dict[str, Any]:
        return {"images": self.num_images, "detections": self.num_detections,
                "images_without_detections_entry": len(self.missing_images), "options": self.options,
                "settings": {k: v.to_dict(curve) for k, v in self.settings.items()}}


def evaluate(gt: GroundTruth, detections: Mapping[str, np.ndarray], *, iou_threshold: float = 0.5,
             settings: Sequence[str] | None = None, thresholds: int | None = 1000, normalize: bool = True,
             pixel_offset: float = 0.0, skip_empty_images: bool = True) -> EvalResult:
    """Score ``detections`` against ``gt`` with the WIDER FACE protocol (see the module docstring).

    Args:
        gt: the ground truth (any reader of :mod:`blazeface.eval.data`).
        detections: image key → ``[N, 5]`` array ``x, y, w, h, score`` in pixels; keys are matched to the
            ground truth's (see :meth:`GroundTruth.resolve`). Images without an entry have no detections.
        settings: the settings to score (default: all of ``gt.settings``).
        thresholds: number of equally spaced score cut-offs (the toolbox's 1000), or ``None`` for every
            distinct score (the exact curve).
        normalize: min–max normalize scores over the whole set first (the toolbox's ``norm_score``).
        pixel_offset: ``0.0`` continuous boxes (default); ``1.0`` the toolbox's ``+1`` pixel IoU.
        skip_empty_images: skip images with no face at all, as the toolbox does.
    """
    dets = gt.resolve(detections)
    dets = {k: np.asarray(v, dtype=np.float64).reshape(-1, 5) for k, v in dets.items()}
    if normalize:
        dets = normalize_scores(dets)
    names = list(settings) if settings is not None else list(gt.settings)
    results: dict[str, SettingResult] = {}
    missing = [k for k in gt.images if k not in detections and k not in dets]
    total_dets = sum(len(v) for v in dets.values())
    for setting in names:
        all_scores, all_counted, all_tp = [], [], []
        num_faces = 0
        for key, image in gt.images.items():
            keep = image.keep(setting)
            num_faces += int(keep.sum())
            d = dets.get(key)
            if d is None or len(d) == 0 or (skip_empty_images and len(image.boxes) == 0):
                continue
            order = np.argsort(-d[:, 4], kind="stable")
            d = d[order]
            counted, tp = match_image(d, image.boxes, keep, iou_threshold, pixel_offset)
            all_scores.append(d[:, 4])
            all_counted.append(counted)
            all_tp.append(tp)
        scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
        counted = np.concatenate(all_counted) if all_counted else np.zeros(0, dtype=bool)
        tp = np.concatenate(all_tp) if all_tp else np.zeros(0, dtype=bool)
        if thresholds is None:
            cuts = np.unique(scores)[::-1]
        else:
            cuts = 1.0 - np.arange(1, thresholds + 1, dtype=np.float64) / thresholds
        # detections with score >= cut: counted ones and true positives (a sum over the sorted scores)
        order = np.argsort(-scores, kind="stable")
        s_sorted = scores[order]
        c_cum = np.concatenate([[0], np.cumsum(counted[order])])
        t_cum = np.concatenate([[0], np.cumsum(tp[order])])
        upto = np.searchsorted(-s_sorted, -cuts, side="right")  # number of scores >= cut
        n_counted = c_cum[upto].astype(np.float64)
        n_tp = t_cum[upto].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(n_counted > 0, n_tp / np.where(n_counted > 0, n_counted, 1), np.nan)
        recall = n_tp / num_faces if num_faces else np.zeros_like(n_tp)
        ap = voc_ap(recall, precision) if num_faces else float("nan")
        results[setting] = SettingResult(setting, ap, precision, recall, cuts, num_faces, int(tp.sum()),
                                         int(counted.sum()))
    options = {"iou_threshold": iou_threshold, "thresholds": thresholds, "normalize_scores": normalize,
               "pixel_offset": pixel_offset, "skip_empty_images": skip_empty_images,
               "ap": "VOC interpolated (voc_ap of the WIDER FACE toolbox)"}
    return EvalResult(results, len(gt.images), total_dets, missing, options)

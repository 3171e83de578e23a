"""Average precision and keypoint error of detections against labelled faces (self-contained).

AP follows the WIDER FACE / PASCAL convention: detections of all images sorted by score, a detection is a
true positive when its IoU with a not-yet-matched counted face is at least ``iou`` (0.5); a detection that
matches an *ignored* face (flagged invalid, outside the setting, or an uncertain pseudo-label) neither
helps nor hurts; AP is the area under the precision envelope (all points).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..ops.boxes import box_iou
from .data import Sample


@dataclass
class MatchResult:
    """Detections of all images, flattened: ``scores``, ``tp`` (1 true, 0 false, -1 ignored), and for true
    positives the detected and labelled keypoints (``det_kp``, ``gt_kp``, ``kp_mask``, ``face_size``)."""

    scores: np.ndarray
    tp: np.ndarray
    num_faces: int
    det_kp: list[np.ndarray] = field(default_factory=list)
    gt_kp: list[np.ndarray] = field(default_factory=list)
    kp_mask: list[np.ndarray] = field(default_factory=list)
    face_size: list[float] = field(default_factory=list)


def match_detections(detections: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], samples: Sequence[Sample],
                     setting: str | None = None, iou: float = 0.5) -> MatchResult:
    """Greedy matching per image, highest score first. ``detections[i]`` is ``(boxes [N, 4] xyxy pixels,
    scores [N], keypoints [N, 6, 2])`` for ``samples[i]``."""
    all_scores, all_tp = [], []
    result = MatchResult(np.zeros(0), np.zeros(0), 0)
    num_faces = 0
    for (boxes, scores, kps), sample in zip(detections, samples):
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        order = np.argsort(-scores, kind="stable")
        boxes, scores = boxes[order], scores[order]
        kps = np.asarray(kps).reshape(-1, 6, 2)[order] if len(order) else np.zeros((0, 6, 2))
        counted = sample.valid(setting)
        num_faces += int(counted.sum())
        gt = sample.boxes.astype(np.float64)
        tp = np.zeros(len(scores))
        if len(gt) and len(scores):
            ious = box_iou(boxes, gt)
            taken = np.zeros(len(gt), bool)
            for d in range(len(scores)):
                cand = np.where(counted & ~taken, ious[d], -1.0)
                g = int(np.argmax(cand))
                if cand[g] >= iou:
                    taken[g] = True
                    tp[d] = 1
                    result.det_kp.append(kps[d])
                    result.gt_kp.append(sample.keypoints[g])
                    result.kp_mask.append(sample.keypoint_mask[g])
                    w, h = gt[g, 2:] - gt[g, :2]
                    result.face_size.append(float(np.sqrt(max(w * h, 1e-12))))
                elif (np.where(~counted, ious[d], 0.0) >= iou).any():
                    tp[d] = -1
        all_scores.append(scores)
        all_tp.append(tp)
    result.scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    result.tp = np.concatenate(all_tp) if all_tp else np.zeros(0)
    result.num_faces = num_faces
    return result


def average_precision(match: MatchResult) -> float:
    """All-point interpolated AP of a :class:`MatchResult` (0 when there is no counted face)."""
    if match.num_faces == 0:
        return float("nan")
    keep = match.tp >= 0
    scores, tp = match.scores[keep], match.tp[keep]
    order = np.argsort(-scores, kind="stable")
    tp = tp[order]
    ctp = np.cumsum(tp)
    cfp = np.cumsum(1 - tp)
    recall = ctp / match.num_faces
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    r = np.concatenate([[0.0], recall, [recall[-1] if len(recall) else 0.0]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    return float(np.sum((r[1:] - r[:-1]) * p[1:]))


def keypoint_error(match: MatchResult) -> float:
    """Mean distance between detected and labelled keypoints of true positives, divided by the face's size
    (``sqrt(w h)`` of the labelled box); NaN when no matched face has keypoints."""
    errs = []
    for det, gt, mask, size in zip(match.det_kp, match.gt_kp, match.kp_mask, match.face_size):
        if mask.any():
            errs.append(np.linalg.norm(det[mask] - gt[mask], axis=-1) / size)
    return float(np.mean(np.concatenate(errs))) if errs else float("nan")


@dataclass
class EvalReport:
    """AP over every counted face (``ap``), per WIDER setting when the labels have them, keypoint error,
    recall at the detector's own threshold."""

    ap: float
    settings: dict[str, float]
    keypoint_error: float
    faces: int
    detections: int

    def as_dict(self) -> dict[str, float]:
        out = {"ap": self.ap, "keypoint_error": self.keypoint_error}
        out.update({f"ap_{k}": v for k, v in self.settings.items()})
        return out


def evaluate_detections(detections: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], samples: Sequence[Sample],
                        iou: float = 0.5) -> EvalReport:
    """AP (all faces, and each WIDER setting present in every sample) and keypoint error."""
    overall = match_detections(detections, samples, None, iou)
    settings = {}
    names = set.intersection(*(set(s.settings) for s in samples)) if samples else set()
    for name in ("easy", "medium", "hard"):
        if name in names:
            settings[name] = average_precision(match_detections(detections, samples, name, iou))
    return EvalReport(average_precision(overall), settings, keypoint_error(overall), overall.num_faces,
                      int(sum(len(d[1]) for d in detections)))


def run_detector(detector, samples: Sequence[Sample], images: dict[str, np.ndarray] | None = None,
                 progress: bool = False) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Run a :class:`~blazeface.FaceDetector` on the samples' images → ``(boxes, scores, keypoints)`` each
    (``images``: a cache of decoded images by path, filled as they are read)."""
    from tqdm import tqdm

    from ..io import load_image

    out = []
    for s in tqdm(samples, desc="evaluate", unit="img", disable=not progress, leave=False):
        if images is not None:
            if s.path not in images:
                images[s.path] = load_image(s.path)
            img = images[s.path]
        else:
            img = load_image(s.path)
        d = detector.detect_tensors([img])[0]
        out.append((d.xyxy, d.scores, d.keypoints))
    return out


def evaluate(detector, samples: Sequence[Sample], images: dict[str, np.ndarray] | None = None, iou: float = 0.5,
             progress: bool = False) -> EvalReport:
    """Detect with ``detector`` on every sample and score it (:func:`evaluate_detections`)."""
    return evaluate_detections(run_detector(detector, samples, images, progress), samples, iou)

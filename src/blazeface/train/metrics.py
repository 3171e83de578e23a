"""Validation metrics of training: AP through :mod:`blazeface.eval` (the WIDER FACE protocol) and keypoint error.

AP is exactly what ``blazeface eval`` reports (:func:`blazeface.eval.evaluate`: min–max normalized scores,
1000 cut-offs, the toolbox's matching, VOC-interpolated area): a detection whose best face (IoU ≥ ``iou``) is
*ignored* (a sample's ``ignore`` flag, or outside the setting) neither helps nor hurts; a second detection of a
found face is a false positive. ``ap`` counts every face that is not ignored (setting ``"all"``); the WIDER
settings (easy / medium / hard) are scored when every sample carries them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..eval.data import GroundTruth, GroundTruthImage
from ..eval.protocol import SETTINGS, box_iou_xywh, evaluate as evaluate_wider, match_image
from .data import Sample

#: ``(boxes [N, 4] xyxy pixels, scores [N], keypoints [N, 6, 2] pixels)`` of one image.
Detections = tuple[np.ndarray, np.ndarray, np.ndarray]


def _xywh(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1)


def ground_truth(samples: Sequence[Sample]) -> GroundTruth:
    """The samples as a :class:`~blazeface.eval.GroundTruth` keyed by their index (``"0"``, ``"1"``, …):
    setting ``"all"`` (every face not ignored) and the WIDER settings every sample has."""
    names = set.intersection(*(set(s.settings) for s in samples)) if samples else set()
    settings = ("all",) + tuple(n for n in SETTINGS if n in names)
    images = {}
    for i, s in enumerate(samples):
        faces = {"all": np.ones(len(s), bool), **{n: s.settings[n] for n in settings[1:]}}
        images[str(i)] = GroundTruthImage(_xywh(s.boxes), faces, s.ignore, s.path, s.size)
    return GroundTruth(images, settings)


def keypoint_error(detections: Sequence[Detections], samples: Sequence[Sample], iou: float = 0.5) -> float:
    """Mean distance between detected and labelled keypoints of the true positives (matched as the protocol
    does, every face not ignored counting), divided by the face's size (``sqrt(w h)`` of the labelled box);
    NaN when no matched face has keypoints."""
    errs = []
    for (boxes, scores, kps), s in zip(detections, samples):
        if not len(s) or not len(scores):
            continue
        order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
        dets = _xywh(boxes)[order]
        gt = _xywh(s.boxes)
        _, tp = match_image(dets, gt, s.valid(), iou)
        best = box_iou_xywh(dets, gt).argmax(1)
        kps = np.asarray(kps, np.float64).reshape(-1, 6, 2)[order]
        for d in np.nonzero(tp)[0]:
            g = best[d]
            mask = s.keypoint_mask[g]
            if mask.any():
                size = float(np.sqrt(max(gt[g, 2] * gt[g, 3], 1e-12)))
                errs.append(np.linalg.norm(kps[d][mask] - s.keypoints[g][mask], axis=-1) / size)
    return float(np.mean(np.concatenate(errs))) if errs else float("nan")


@dataclass
class EvalReport:
    """AP over every counted face (``ap``), per WIDER setting when the labels have them, keypoint error,
    the number of counted faces and of detections."""

    ap: float
    settings: dict[str, float]
    keypoint_error: float
    faces: int
    detections: int

    def as_dict(self) -> dict[str, float]:
        out = {"ap": self.ap, "keypoint_error": self.keypoint_error}
        out.update({f"ap_{k}": v for k, v in self.settings.items()})
        return out


def evaluate_detections(detections: Sequence[Detections], samples: Sequence[Sample], iou: float = 0.5) -> EvalReport:
    """AP (all faces, and each WIDER setting present in every sample) by :func:`blazeface.eval.evaluate`,
    and keypoint error. ``detections[i]`` belongs to ``samples[i]``."""
    gt = ground_truth(samples)
    dets = {str(i): np.concatenate([_xywh(b), np.asarray(s, np.float64).reshape(-1, 1)], 1)
            for i, (b, s, _) in enumerate(detections)}
    result = evaluate_wider(gt, dets, iou_threshold=iou)
    return EvalReport(result["all"].ap, {k: v.ap for k, v in result.settings.items() if k != "all"},
                      keypoint_error(detections, samples, iou), result["all"].num_faces,
                      int(sum(len(d[1]) for d in detections)))


def run_detector(detector, samples: Sequence[Sample], images: dict[str, np.ndarray] | None = None,
                 progress: bool = False) -> list[Detections]:
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

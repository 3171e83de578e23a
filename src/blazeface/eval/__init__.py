"""Accuracy evaluation: the WIDER FACE protocol (easy / medium / hard AP), FDDB's discrete ROC, readers for
the usual annotation and detection formats, reports and PR-curve plots. ``blazeface eval`` on the command line."""

from .data import (GroundTruth, GroundTruthImage, detections_from_results, image_key, read_annotations_json,
                   read_coco, read_coco_results, read_detections, read_ground_truth, read_jsonl,
                   read_mediapipe_json, read_wider_mat, read_wider_predictions, read_wider_txt,
                   to_wider_style)
from .protocol import SETTINGS, EvalResult, SettingResult, box_iou_xywh, evaluate, match_image, voc_ap

__all__ = [
    "GroundTruth", "GroundTruthImage", "detections_from_results", "image_key", "read_annotations_json",
    "read_coco", "read_coco_results", "read_detections", "read_ground_truth", "read_jsonl", "read_mediapipe_json",
    "read_wider_mat", "read_wider_predictions", "read_wider_txt", "to_wider_style", "SETTINGS", "EvalResult", "SettingResult",
    "box_iou_xywh", "evaluate", "match_image", "voc_ap",
]

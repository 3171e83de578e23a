"""Stateless detection ops: anchors, box decoding, IoU, non-maximum suppression."""

from .anchors import generate_anchors
from .boxes import box_iou, decode_boxes, scores_from_logits, xyxy_to_cxcywh, xyxy_to_xywh
from .nms import Suppressed, non_max_suppression

__all__ = ["generate_anchors", "box_iou", "decode_boxes", "scores_from_logits", "xyxy_to_cxcywh",
           "xyxy_to_xywh", "Suppressed", "non_max_suppression"]

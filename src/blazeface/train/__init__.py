"""Training and fine-tuning: datasets, augmentations, anchor matching, losses, the :class:`Trainer`.

>>> from blazeface.train import Trainer, TrainConfig, load_annotations
>>> samples = load_annotations("wider_face_train_bbx_gt.txt", images="WIDER_train/images")
>>> Trainer(TrainConfig(model="paper", init="scratch", epochs=30), samples, out="runs/paper").fit()
"""

from .augment import AugmentConfig, Target, make_example
from .data import (
    AnnotationError,
    Sample,
    detect_format,
    load_annotations,
    pseudo_label,
    split_by_event,
    write_jsonl,
)
from .finetune import WeightEMA, l2sp_penalty, param_groups
from .loss import DetectionLoss, LossConfig, MatchConfig, encode, match_anchors
from .metrics import EvalReport, evaluate, evaluate_detections, ground_truth, keypoint_error
from .trainer import TrainConfig, Trainer, TrainDataset

__all__ = [
    "AugmentConfig", "Target", "make_example", "AnnotationError", "Sample", "detect_format", "load_annotations",
    "pseudo_label", "split_by_event", "write_jsonl", "DetectionLoss", "LossConfig", "MatchConfig", "encode",
    "match_anchors", "EvalReport", "evaluate", "evaluate_detections", "ground_truth", "keypoint_error",
    "TrainConfig", "Trainer", "TrainDataset", "WeightEMA", "l2sp_penalty", "param_groups",
]

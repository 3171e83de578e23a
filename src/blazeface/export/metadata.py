"""The metadata every exported file carries: enough to decode its outputs without this package."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..config import ModelConfig
from ..results import FaceKeypoint

FORMAT_VERSION = 1
METADATA_KEY = "blazeface"  # ONNX metadata_props key / TorchScript extra file stem


def build_metadata(config: ModelConfig, *, layout: str = "NCHW", quantization: dict[str, Any] | None = None,
                   postprocess: dict[str, Any] | None = None, outputs: list[str] | None = None) -> dict[str, Any]:
    """A JSON-serializable description of an exported ``config`` network."""
    from .. import __version__

    s = config.input_size
    shape = [-1, 3, s, s] if layout == "NCHW" else [1, s, s, 3]
    return {
        "format_version": FORMAT_VERSION,
        "producer": f"blazeface {__version__}",
        "model": config.name,
        "description": config.description,
        "license": config.license,
        "input": {
            "shape": shape, "layout": layout, "color": "RGB", "range": [-1.0, 1.0],
            "normalization": "x / 127.5 - 1 on uint8 pixels",
            "letterbox": "centred square of side max(W, H), bilinear, zero border (-1.0), pixel j samples "
                         "j * side / S + x0 (no half-pixel term); map back with x_src = x_norm * side + x0",
        },
        "outputs": outputs or ["regressors", "logits"],
        "anchors": dataclasses.asdict(config.anchors),
        "num_anchors": config.net.num_anchors,
        "decode": {
            "box_scale": config.box_scale, "coords": "x_center, y_center, w, h, then 6 keypoints (x, y), input pixels",
            "formula": "x = raw / box_scale * anchor_w + anchor_x; w = raw_w / box_scale * anchor_w",
            "score": f"sigmoid(clip(logit, -{config.score_clip}, {config.score_clip}))",
        },
        "score_clip": config.score_clip,
        "min_score": config.min_score,
        "min_suppression": config.min_suppression,
        "nms": "weighted (MediaPipe blending: score-weighted mean of the cluster, the top detection's score)",
        "keypoints": [k.name.lower() for k in FaceKeypoint],
        "quantization": quantization,
        "postprocess": postprocess,
    }


def dumps(meta: dict[str, Any]) -> str:
    return json.dumps(meta, sort_keys=True, separators=(",", ":"))

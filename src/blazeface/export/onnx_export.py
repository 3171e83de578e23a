"""ONNX export: the raw network with a dynamic batch, optionally with decoding + NMS in the graph.

The post-processing subgraph (opset >= 11 ops only) reproduces MediaPipe's pipeline exactly:
decode against the anchors, ``sigmoid(clip(logit))``, keep ``score >= min_score`` with a finite box of
non-negative size, then weighted NMS. Cluster leaders are what ONNX ``NonMaxSuppression`` selects
(greedy, IoU strictly above the threshold: the same leaders as MediaPipe's blending); each candidate
joins the first leader (by score) it overlaps, and the output is the cluster's score-weighted mean of
corners and keypoints with the leader's own score. The one difference: MediaPipe stops at a leader of
empty area; ONNX NMS goes on (such boxes do not occur with the shipped models).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from ..ops.anchors import generate_anchors
from .metadata import METADATA_KEY, dumps

OPSET = 18
RAW_OUTPUTS = ["regressors", "logits"]
POST_OUTPUTS = ["boxes", "keypoints", "scores", "batch_index"]


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("ONNX export needs the 'onnx' extra: pip install 'blazeface[onnx]'") from exc
    return onnx


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Mute the exporter's log lines and warnings about things this export does not use (torchvision ops, …)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_raw_onnx(net: nn.Module, input_size: int) -> Any:
    """Export ``net`` (``x [B, 3, S, S]`` → ``regressors, logits``) with a dynamic batch; returns the ``ModelProto``."""
    onnx = _import_onnx()
    example = torch.zeros(2, 3, input_size, input_size)
    net = net.eval()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            net, (example,), None, input_names=["input"], output_names=RAW_OUTPUTS,
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, dynamo=True, opset_version=OPSET,
            verbose=False, optimize=True,
        )
    model = program.model_proto
    for node in model.graph.node:  # drop the exporter's per-node stack traces (local paths)
        del node.metadata_props[:]
    for value in list(model.graph.value_info):
        del value.metadata_props[:]
    model.graph.name = "blazeface"
    onnx.checker.check_model(model)
    return model


def set_metadata(model: Any, meta: dict[str, Any]) -> None:
    """Store ``meta`` as JSON under ``metadata_props['blazeface']`` (plus ``model_name``)."""
    del model.metadata_props[:]
    for key, value in ((METADATA_KEY, dumps(meta)), ("model_name", meta["model"])):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "blazeface"
    model.doc_string = f"BlazeFace {meta['model']} ({meta['description']})"


def add_postprocess(model: Any, config: ModelConfig, max_detections: int = 100, nms: str = "weighted") -> None:
    """Append decoding and NMS to a raw BlazeFace ``ModelProto`` in place (raw outputs stay outputs).

    New outputs: ``boxes [N, 4]`` (x1, y1, x2, y2, normalized to the network input), ``keypoints [N, 6, 2]``,
    ``scores [N]`` and ``batch_index [N]`` (int64, which image of the batch). ``min_score`` and
    ``min_suppression`` are graph inputs with the model's defaults (feed them to override).
    """
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    if nms not in ("weighted", "hard"):
        raise ValueError(f"unknown NMS mode {nms!r}; expected 'weighted' or 'hard'")
    g = model.graph
    anchors = generate_anchors(config.anchors).numpy().astype(np.float32)  # [A, 4] cx, cy, w, h
    a = anchors.shape[0]
    offsets = np.repeat(anchors[:, None, :2], 8, axis=1)  # [A, 8, 2]: pair 1 is the size: no offset
    offsets[:, 1, :] = 0.0
    consts = {
        "pp_scale": np.array(config.box_scale, np.float32),
        "pp_anchor_wh": anchors[:, None, 2:].copy(),  # [A, 1, 2]
        "pp_offsets": offsets,
        "pp_pairs_shape": np.array([0, a, 8, 2], np.int64),
        "pp_kp_shape": np.array([0, a, 12], np.int64),
        "pp_half": np.array(0.5, np.float32),
        "pp_zero": np.array(0.0, np.float32),
        "pp_one": np.array(1.0, np.float32),
        "pp_neg_one": np.array(-1.0, np.float32),
        "pp_tiny": np.array(np.finfo(np.float32).tiny, np.float32),
        "pp_clip_lo": np.array(-config.score_clip, np.float32),
        "pp_clip_hi": np.array(config.score_clip, np.float32),
        "pp_score_floor": np.array([-0.5], np.float32),
        "pp_max_out": np.array([max_detections], np.int64),
        "pp_ax2": np.array([2], np.int64),
        "pp_ax1": np.array([1], np.int64),
        "pp_ax_last": np.array([-1], np.int64),
        "pp_i0": np.array([0], np.int64), "pp_i1": np.array([1], np.int64), "pp_i2": np.array([2], np.int64),
        "pp_i4": np.array([4], np.int64), "pp_i8": np.array([8], np.int64),
        "pp_sel_cols": np.array([0, 2], np.int64),
        "pp_kp_out_shape": np.array([-1, 6, 2], np.int64),
    }
    for name, value in consts.items():
        g.initializer.append(numpy_helper.from_array(value, name))
    for name, value in (("min_score", config.min_score), ("min_suppression", config.min_suppression)):
        g.initializer.append(numpy_helper.from_array(np.array([value], np.float32), name))
        g.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]))

    nodes = []

    def op(op_type: str, inputs: list[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op_type, inputs, [output], name=f"pp_{output}", **attrs))
        return output

    # --- decode -------------------------------------------------------------------------------
    op("Div", ["regressors", "pp_scale"], "pp_r")
    op("Reshape", ["pp_r", "pp_pairs_shape"], "pp_pairs")                         # [B, A, 8, 2]
    op("Mul", ["pp_pairs", "pp_anchor_wh"], "pp_pairs_wh")
    op("Add", ["pp_pairs_wh", "pp_offsets"], "pp_dec")                           # [B, A, 8, 2]
    op("Slice", ["pp_dec", "pp_i0", "pp_i1", "pp_ax2"], "pp_center4")           # [B, A, 1, 2]
    op("Slice", ["pp_dec", "pp_i1", "pp_i2", "pp_ax2"], "pp_size4")
    op("Slice", ["pp_dec", "pp_i2", "pp_i8", "pp_ax2"], "pp_kp4")               # [B, A, 6, 2]
    op("Squeeze", ["pp_center4", "pp_ax2"], "pp_center")                        # [B, A, 2]
    op("Squeeze", ["pp_size4", "pp_ax2"], "pp_size")
    op("Mul", ["pp_size", "pp_half"], "pp_half_size")
    op("Sub", ["pp_center", "pp_half_size"], "pp_lt")
    op("Add", ["pp_center", "pp_half_size"], "pp_rb")
    op("Concat", ["pp_lt", "pp_rb"], "pp_boxes", axis=-1)                       # [B, A, 4]
    op("Reshape", ["pp_kp4", "pp_kp_shape"], "pp_kp")                           # [B, A, 12]
    op("Concat", ["pp_boxes", "pp_kp"], "pp_coords", axis=-1)                   # [B, A, 16]
    op("Squeeze", ["logits", "pp_ax2"], "pp_logit")
    op("Clip", ["pp_logit", "pp_clip_lo", "pp_clip_hi"], "pp_logit_c")
    op("Sigmoid", ["pp_logit_c"], "pp_scores")                                  # [B, A]
    # keep: score >= min_score, width/height >= 0, finite box
    op("GreaterOrEqual", ["pp_scores", "min_score"], "pp_k_score")
    op("Sub", ["pp_rb", "pp_lt"], "pp_wh")
    op("GreaterOrEqual", ["pp_wh", "pp_zero"], "pp_wh_ok2")
    op("Cast", ["pp_wh_ok2"], "pp_wh_ok2f", to=TensorProto.FLOAT)
    op("ReduceMin", ["pp_wh_ok2f", "pp_ax_last"], "pp_wh_okf", keepdims=0)
    op("Sub", ["pp_boxes", "pp_boxes"], "pp_fin0")  # 0 where finite, NaN where inf/NaN
    op("Equal", ["pp_fin0", "pp_zero"], "pp_fin4")
    op("Cast", ["pp_fin4"], "pp_fin4f", to=TensorProto.FLOAT)
    op("ReduceMin", ["pp_fin4f", "pp_ax_last"], "pp_finf", keepdims=0)
    op("Mul", ["pp_wh_okf", "pp_finf"], "pp_geom_f")
    op("Cast", ["pp_geom_f"], "pp_geom", to=TensorProto.BOOL)
    op("And", ["pp_k_score", "pp_geom"], "pp_keep")                             # [B, A]
    op("Where", ["pp_keep", "pp_scores", "pp_neg_one"], "pp_masked")
    op("Unsqueeze", ["pp_masked", "pp_ax1"], "pp_nms_scores")                   # [B, 1, A]
    op("NonMaxSuppression", ["pp_boxes", "pp_nms_scores", "pp_max_out", "min_suppression", "pp_score_floor"],
       "pp_selected", center_point_box=0)                                       # [M, 3]
    op("Gather", ["pp_selected", "pp_sel_cols"], "pp_sel_ba", axis=1)           # [M, 2] (batch, anchor)
    op("Gather", ["pp_selected", "pp_i0"], "pp_bidx2", axis=1)                  # [M, 1]
    op("Squeeze", ["pp_bidx2", "pp_ax1"], "batch_index")                        # [M]
    op("GatherND", ["pp_scores", "pp_sel_ba"], "scores")                        # [M]
    op("GatherND", ["pp_coords", "pp_sel_ba"], "pp_lead_coords")                # [M, 16]
    if nms == "hard":
        op("Identity", ["pp_lead_coords"], "pp_out_coords")
    else:
        # IoU of each leader with every candidate of its image: [M, A]
        op("Gather", ["pp_coords", "batch_index"], "pp_cand", axis=0)           # [M, A, 16]
        op("Gather", ["pp_keep", "batch_index"], "pp_cand_keep", axis=0)        # [M, A]
        op("Gather", ["pp_scores", "batch_index"], "pp_cand_scores", axis=0)    # [M, A]
        op("Slice", ["pp_cand", "pp_i0", "pp_i4", "pp_ax_last"], "pp_cb")       # [M, A, 4]
        op("Slice", ["pp_lead_coords", "pp_i0", "pp_i4", "pp_ax_last"], "pp_lb2")
        op("Unsqueeze", ["pp_lb2", "pp_ax1"], "pp_lb")                          # [M, 1, 4]
        op("Slice", ["pp_cb", "pp_i0", "pp_i2", "pp_ax_last"], "pp_c_lt")
        op("Slice", ["pp_cb", "pp_i2", "pp_i4", "pp_ax_last"], "pp_c_rb")
        op("Slice", ["pp_lb", "pp_i0", "pp_i2", "pp_ax_last"], "pp_l_lt")
        op("Slice", ["pp_lb", "pp_i2", "pp_i4", "pp_ax_last"], "pp_l_rb")
        for who in ("c", "l"):
            op("Sub", [f"pp_{who}_rb", f"pp_{who}_lt"], f"pp_{who}_wh")
            op("Max", [f"pp_{who}_wh", "pp_zero"], f"pp_{who}_whc")
            op("ReduceProd", [f"pp_{who}_whc", "pp_ax_last"], f"pp_{who}_area", keepdims=0)
        op("Max", ["pp_c_lt", "pp_l_lt"], "pp_i_lt")
        op("Min", ["pp_c_rb", "pp_l_rb"], "pp_i_rb")
        op("Sub", ["pp_i_rb", "pp_i_lt"], "pp_i_wh")
        op("Max", ["pp_i_wh", "pp_zero"], "pp_i_whc")
        op("ReduceProd", ["pp_i_whc", "pp_ax_last"], "pp_inter", keepdims=0)    # [M, A]
        op("Add", ["pp_c_area", "pp_l_area"], "pp_area_sum")
        op("Sub", ["pp_area_sum", "pp_inter"], "pp_union")
        op("Max", ["pp_union", "pp_tiny"], "pp_union_c")
        op("Div", ["pp_inter", "pp_union_c"], "pp_iou_raw")
        op("Greater", ["pp_union", "pp_zero"], "pp_union_pos")
        op("Where", ["pp_union_pos", "pp_iou_raw", "pp_zero"], "pp_iou")
        op("Greater", ["pp_iou", "min_suppression"], "pp_over")
        op("And", ["pp_over", "pp_cand_keep"], "pp_member_b")
        op("Cast", ["pp_member_b"], "pp_member", to=TensorProto.FLOAT)          # [M, A]
        # A candidate joins the first leader of its image that it overlaps: count overlapping
        # leaders m' <= m of the same image; first membership is where that count is 1.
        op("Unsqueeze", ["batch_index", "pp_ax1"], "pp_b_col")                  # [M, 1]
        op("Unsqueeze", ["batch_index", "pp_i0"], "pp_b_row")                   # [1, M]
        op("Equal", ["pp_b_col", "pp_b_row"], "pp_same")                        # [M', M]
        op("Shape", ["batch_index"], "pp_m")
        op("ConstantOfShape", ["pp_m"], "pp_ones_m", value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))
        op("Unsqueeze", ["pp_ones_m", "pp_ax1"], "pp_ones_col")                 # [M, 1]
        op("Unsqueeze", ["pp_ones_m", "pp_i0"], "pp_ones_row")                  # [1, M]
        op("MatMul", ["pp_ones_col", "pp_ones_row"], "pp_ones_mm")              # [M, M]
        op("Trilu", ["pp_ones_mm"], "pp_upper", upper=1)                        # [m', m] = 1 where m' <= m
        op("Cast", ["pp_same"], "pp_same_f", to=TensorProto.FLOAT)
        op("Mul", ["pp_upper", "pp_same_f"], "pp_earlier")                      # [M', M]
        op("Transpose", ["pp_earlier"], "pp_earlier_t", perm=[1, 0])            # [M, M']
        op("MatMul", ["pp_earlier_t", "pp_member"], "pp_count")                 # [M, A]
        op("Equal", ["pp_count", "pp_one"], "pp_first_b")
        op("Cast", ["pp_first_b"], "pp_first", to=TensorProto.FLOAT)
        op("Mul", ["pp_member", "pp_first"], "pp_assign")
        op("Mul", ["pp_assign", "pp_cand_scores"], "pp_w")                      # [M, A]
        op("ReduceSum", ["pp_w", "pp_ax_last"], "pp_total", keepdims=1)         # [M, 1]
        op("Unsqueeze", ["pp_w", "pp_ax1"], "pp_w3")                            # [M, 1, A]
        op("MatMul", ["pp_w3", "pp_cand"], "pp_wsum3")                          # [M, 1, 16]
        op("Squeeze", ["pp_wsum3", "pp_ax1"], "pp_wsum")
        op("Max", ["pp_total", "pp_tiny"], "pp_total_c")
        op("Div", ["pp_wsum", "pp_total_c"], "pp_blend")
        op("Greater", ["pp_total", "pp_zero"], "pp_has")
        op("Where", ["pp_has", "pp_blend", "pp_lead_coords"], "pp_out_coords")  # degenerate leader: itself
    op("Slice", ["pp_out_coords", "pp_i0", "pp_i4", "pp_ax_last"], "boxes")
    op("Slice", ["pp_out_coords", "pp_i4", "pp_i8", "pp_ax_last"], "pp_kp_flat")  # 4..16 (clamped)
    nodes[-1].input[2] = "pp_kp_end"
    g.initializer.append(numpy_helper.from_array(np.array([16], np.int64), "pp_kp_end"))
    op("Reshape", ["pp_kp_flat", "pp_kp_out_shape"], "keypoints")
    g.node.extend(nodes)
    g.output.extend([
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["detections", 4]),
        helper.make_tensor_value_info("keypoints", TensorProto.FLOAT, ["detections", 6, 2]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["detections"]),
        helper.make_tensor_value_info("batch_index", TensorProto.INT64, ["detections"]),
    ])
    onnx.checker.check_model(model)


def save_onnx(model: Any, path: str | Path) -> Path:
    onnx = _import_onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path

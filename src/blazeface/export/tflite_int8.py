"""Full-integer TFLite from a float ``.tflite``: what TensorFlow's converter does, for the BlazeFace op set.

Every activation of the backbone becomes int8 (asymmetric, per tensor, min-max ranges measured by
running the float file on calibration images); convolution weights become symmetric int8 per output
channel, biases int32. Ops that move values without arithmetic (``PAD``, ``MAX_POOL_2D``, ``RESHAPE``,
``TRANSPOSE``, ``CONCATENATION``, ``RESIZE_BILINEAR``, ``DEPTH_TO_SPACE``) share one scale between input
and output, as XNNPACK's QS8 kernels require, so the whole backbone runs in XNNPACK's int8 path with no
float round trip. The heads (the ops from the last 1×1 convolutions to the outputs) stay float after a
``DEQUANTIZE``: logits span [-2000, 20] over padding anchors and regressors ±300 px, both too wide for
one int8 scale; the regressors' weights are stored int8 per output channel behind a constant ``DEQUANTIZE``,
the classifiers' stay float32 (a few outlier weights set their int8 step: back flipped faces near the threshold).
``float_tail=N`` also keeps the last ``N`` arithmetic ops upstream of the heads in float (:func:`float_tail_ops`),
with a ``DEQUANTIZE`` where an int8 tensor enters them and a ``QUANTIZE`` where their output feeds int8 ops.
Input and outputs stay float32 (a ``QUANTIZE`` op follows the input).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

# output shares the input's quantization (no arithmetic): XNNPACK requires it for QS8
_SAME_SCALE = {"PAD", "PADV2", "MAX_POOL_2D", "RESHAPE", "TRANSPOSE", "CONCATENATION", "RESIZE_BILINEAR",
               "DEPTH_TO_SPACE", "SQUEEZE"}
_ARITHMETIC = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "RELU"}
# minimum op versions with int8 kernels (per-channel weights for the convolutions)
_MIN_VERSION = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "ADD": 2, "PAD": 2, "PADV2": 2, "MAX_POOL_2D": 2,
                "RESHAPE": 1, "TRANSPOSE": 2, "CONCATENATION": 2, "RESIZE_BILINEAR": 2, "DEPTH_TO_SPACE": 2,
                "SQUEEZE": 2, "QUANTIZE": 1, "DEQUANTIZE": 2}


PERCENTILE = 99.95  # per-image activation percentile: the best of 99.5–99.99 and min-max on wider_val_dev


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _op_names(schema: Any) -> dict[int, str]:
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _name(t: Any) -> str:
    return t.name.decode() if isinstance(t.name, bytes) else str(t.name or "")


def _code(model: Any, op: Any, names: dict[int, str]) -> str:
    c = model.operatorCodes[op.opcodeIndex]
    return names[max(c.builtinCode, c.deprecatedBuiltinCode)]


def head_ops(model: Any, names: dict[int, str], logits_only: bool = False) -> set[int]:
    """Indices of the ops from the outputs back to (and including) the first ``CONV_2D`` on each path.

    ``logits_only``: from the logits outputs only (``[1, A, 1]``): the classifier heads, whose weights stay float
    (see ``blazeface.export.quantize.classifier_nodes``).
    """
    g = model.subgraphs[0]
    producer = {o: i for i, op in enumerate(g.operators) for o in op.outputs}
    head: set[int] = set()
    stack = [t for t in g.outputs if not logits_only or list(g.tensors[t].shape)[-1] == 1]
    while stack:
        i = producer.get(stack.pop())
        if i is None or i in head:
            continue
        head.add(i)
        if _code(model, g.operators[i], names) != "CONV_2D":
            stack.extend(t for t in g.operators[i].inputs if t >= 0 and t in producer)
    return head


def float_tail_ops(model: Any, names: dict[int, str], heads: set[int], depth: int) -> set[int]:
    """Indices of the ops up to ``depth`` arithmetic ops (convolution, ``ADD``, ``RELU``) upstream of the head
    convolutions' inputs, with the value-moving ops (transpose, pad, …) between them; ``depth=0``: none."""
    g = model.subgraphs[0]
    producer = {o: i for i, op in enumerate(g.operators) for o in op.outputs}

    def upstream(ops: Iterable[int]) -> list[int]:
        return [producer[t] for i in ops for t in g.operators[i].inputs if t >= 0 and t in producer]

    tail: set[int] = set()
    frontier = upstream(i for i in heads if _code(model, g.operators[i], names) == "CONV_2D")
    for _ in range(depth):
        arithmetic: list[int] = []
        stack = list(frontier)
        while stack:  # value-moving ops cost no depth: walk through them to the arithmetic ops above
            i = stack.pop()
            if i in tail or i in heads:
                continue
            tail.add(i)
            if _code(model, g.operators[i], names) in _ARITHMETIC:
                arithmetic.append(i)
            else:
                stack.extend(upstream([i]))
        frontier = upstream(arithmetic)
    return tail


def activation_ranges(data: bytes, images: Iterable[np.ndarray],
                      percentile: float | None = None) -> dict[int, tuple[float, float]]:
    """Range of every float tensor of the ``.tflite`` ``data`` over ``images`` (each ``[1, S, S, 3]``).

    ``percentile=None``: min and max; else per image the ``100 - p`` and ``p`` percentiles (outliers of each
    image clipped), then the widest over the images.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=data, experimental_preserve_all_tensors=True, num_threads=1,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    details = [d for d in it.get_tensor_details() if d["dtype"] == np.float32]
    inp = it.get_input_details()[0]["index"]
    lo: dict[int, float] = {}
    hi: dict[int, float] = {}
    for x in images:
        it.set_tensor(inp, x.astype(np.float32))
        it.invoke()
        for d in details:
            try:
                v = it.get_tensor(d["index"])
            except ValueError:  # a constant without data, or freed
                continue
            if v.size:
                if percentile is None:
                    a, b = float(v.min()), float(v.max())
                else:
                    a, b = (float(q) for q in np.percentile(v, [100 - percentile, percentile]))
                lo[d["index"]] = min(lo.get(d["index"], 0.0), a)
                hi[d["index"]] = max(hi.get(d["index"], 0.0), b)
    return {k: (lo[k], hi[k]) for k in lo}


def _qparams(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 scale and zero point for [lo, hi] (0 always representable)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / 255.0, 1e-8)
    zero = int(np.clip(round(-128 - lo / scale), -128, 127))
    return float(scale), zero


def _per_channel_int8(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights per channel along ``axis``: ``(int8 values, float32 scales)``."""
    wmax = np.abs(np.moveaxis(w, axis, 0)).reshape(w.shape[axis], -1).max(1)
    scale = np.where(wmax > 0, wmax / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    return np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8), scale


def _unshare_conv_constants(model: Any, names: dict[int, str]) -> None:
    """Give every convolution its own weight and bias tensors: the converter shares equal constants (e.g. one zero
    bias for several depthwise convolutions), and each is rewritten with its own convolution's scales."""
    g = model.subgraphs[0]
    seen: set[int] = set()
    for op in g.operators:
        if _code(model, op, names) not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        for j in (1, 2):
            t = op.inputs[j] if len(op.inputs) > j else -1
            if t < 0:
                continue
            if t in seen:
                old = g.tensors[t]
                buf = model.buffers[old.buffer]
                copy_buf = type(buf)()
                copy_buf.data = None if buf.data is None else np.array(buf.data, np.uint8)
                model.buffers.append(copy_buf)
                new = type(old)()
                new.shape, new.type, new.name = list(old.shape), old.type, _name(old) + f"_copy{len(g.tensors)}"
                new.buffer, new.quantization = len(model.buffers) - 1, old.quantization
                g.tensors.append(new)
                t = op.inputs[j] = len(g.tensors) - 1
            seen.add(t)


def quantize_tflite(data: bytes, images: Iterable[np.ndarray], percentile: float | None = PERCENTILE,
                    float_tail: int = 0) -> bytes:
    """The float BlazeFace ``.tflite`` ``data`` as a full-integer int8 model (float I/O, float heads).

    ``images``: calibration inputs as the float model takes them (``[1, S, S, 3]`` in [-1, 1]);
    ``percentile``: activation ranges (see :func:`activation_ranges`; ``None``: min-max);
    ``float_tail``: that many arithmetic ops upstream of the heads also stay float (:func:`float_tail_ops`).
    """
    if float_tail < 0:
        raise ValueError(f"float_tail must be >= 0, got {float_tail}")
    import flatbuffers

    schema = _schema()
    names = _op_names(schema)
    ranges = activation_ranges(data, images, percentile)
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    g = model.subgraphs[0]
    tensors = g.tensors
    _unshare_conv_constants(model, names)
    heads = head_ops(model, names)
    floats = heads | float_tail_ops(model, names, heads, float_tail)  # ops that compute in float
    const = {i for i, t in enumerate(tensors) if t.buffer > 0 and model.buffers[t.buffer].data is not None
             and len(model.buffers[t.buffer].data)}

    # activations to quantize: inputs/outputs of backbone ops; tensors of one "same scale" op share params
    parent = list(range(len(tensors)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    quantized: set[int] = set()
    for i, op in enumerate(g.operators):
        if i in floats:
            continue
        kind = _code(model, op, names)
        if kind not in _SAME_SCALE | _ARITHMETIC:
            raise ValueError(f"int8 TFLite: op {kind} is not supported")
        acts = [t for t in op.inputs if t >= 0 and t not in const] + list(op.outputs)
        quantized.update(acts)
        if kind in _SAME_SCALE:
            for t in acts[1:]:
                parent[find(t)] = find(acts[0])
    group_range: dict[int, tuple[float, float]] = {}
    for t in quantized:
        lo, hi = ranges.get(t, (0.0, 0.0))
        r = group_range.get(find(t), (0.0, 0.0))
        group_range[find(t)] = (min(r[0], lo), max(r[1], hi))

    def set_quant(t: Any, scale: list[float], zero: list[int], axis: int = 0) -> None:
        q = schema.QuantizationParametersT()
        q.scale, q.zeroPoint, q.quantizedDimension = scale, zero, axis
        t.quantization = q

    def set_buffer(t: Any, values: np.ndarray) -> None:
        model.buffers[t.buffer].data = np.frombuffer(values.tobytes(), np.uint8)

    act_q: dict[int, tuple[float, int]] = {}
    for t in quantized:
        act_q[t] = _qparams(*group_range[find(t)])
        tensors[t].type = schema.TensorType.INT8
        set_quant(tensors[t], [act_q[t][0]], [act_q[t][1]])

    for i, op in enumerate(g.operators):
        kind = _code(model, op, names)
        if i in floats or kind not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        w_t, b_t = tensors[op.inputs[1]], tensors[op.inputs[2]]
        w = np.frombuffer(bytes(model.buffers[w_t.buffer].data), np.float32).reshape(w_t.shape)
        axis = 0 if kind == "CONV_2D" else 3
        w_q, w_scale = _per_channel_int8(w, axis)
        w_t.type = schema.TensorType.INT8
        set_buffer(w_t, w_q)
        set_quant(w_t, w_scale.tolist(), [0] * len(w_scale), axis)
        b = np.frombuffer(bytes(model.buffers[b_t.buffer].data), np.float32)
        b_scale = (act_q[op.inputs[0]][0] * w_scale.astype(np.float64))
        b_t.type = schema.TensorType.INT32
        set_buffer(b_t, np.round(b / b_scale).astype(np.int32))
        set_quant(b_t, b_scale.tolist(), [0] * len(b_scale), 0)

    # op codes: int8-capable versions; QUANTIZE / DEQUANTIZE at the float boundaries
    def opcode(kind: str) -> int:
        code = getattr(schema.BuiltinOperator, kind)
        for j, c in enumerate(model.operatorCodes):
            if max(c.builtinCode, c.deprecatedBuiltinCode) == code:
                c.version = max(c.version, _MIN_VERSION.get(kind, 1))
                return j
        c = schema.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), _MIN_VERSION.get(kind, 1)
        model.operatorCodes.append(c)
        return len(model.operatorCodes) - 1

    for op in g.operators:
        opcode(_code(model, op, names))

    # float convolutions (regressor heads, tail): float compute on weights stored int8 per output channel behind a
    # constant DEQUANTIZE (evaluated once when the interpreter is prepared); the classifier heads keep float weights
    float_conv_weights: dict[int, int] = {}
    classifiers = head_ops(model, names, logits_only=True)
    for i in sorted(floats - classifiers):
        op = g.operators[i]
        if _code(model, op, names) != "CONV_2D" or op.inputs[1] not in const:
            continue
        w_t = tensors[op.inputs[1]]
        w_q, w_scale = _per_channel_int8(np.frombuffer(bytes(model.buffers[w_t.buffer].data), np.float32)
                                         .reshape(w_t.shape), 0)
        buf = schema.BufferT()
        buf.data = np.frombuffer(w_q.tobytes(), np.uint8)
        model.buffers.append(buf)
        q_t = schema.TensorT()
        q_t.shape, q_t.name, q_t.type, q_t.buffer = list(w_t.shape), _name(w_t) + "_int8", schema.TensorType.INT8, len(model.buffers) - 1
        set_quant(q_t, w_scale.tolist(), [0] * len(w_scale), 0)
        tensors.append(q_t)
        model.buffers[w_t.buffer].data = None
        w_t.buffer = 0
        float_conv_weights[i] = len(tensors) - 1

    def new_tensor(like: Any, name: str, dtype: int) -> int:
        t = schema.TensorT()
        t.shape, t.name, t.type = list(like.shape), name, dtype
        t.buffer = 0
        if like.shapeSignature is not None:
            t.shapeSignature = list(like.shapeSignature)
        tensors.append(t)
        return len(tensors) - 1

    def convert_op(kind: str, src: int, dst: int) -> Any:
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = opcode(kind), [src], [dst]
        return o

    inputs_before, outputs_before = list(g.inputs), list(g.outputs)
    ops: list[Any] = []
    float_copy: dict[int, int] = {}
    # graph inputs stay float: the original tensor becomes int8, a new float tensor is the graph input
    for k, t in enumerate(g.inputs):
        if t in quantized:
            f = new_tensor(tensors[t], _name(tensors[t]) + "_float", schema.TensorType.FLOAT32)
            ops.append(convert_op("QUANTIZE", f, t))
            g.inputs[k] = f
    for i, op in enumerate(g.operators):
        if i in float_conv_weights:
            ops.append(convert_op("DEQUANTIZE", float_conv_weights[i], op.inputs[1]))
            model.operatorCodes[ops[-1].opcodeIndex].version = 5  # per-channel int8 input
        if i in floats:
            for j, t in enumerate(op.inputs):
                if t in quantized:
                    if t not in float_copy:
                        float_copy[t] = new_tensor(tensors[t], _name(tensors[t]) + "_dequantized",
                                                   schema.TensorType.FLOAT32)
                        ops.append(convert_op("DEQUANTIZE", t, float_copy[t]))
                    op.inputs[j] = float_copy[t]
        ops.append(op)
        if i in floats:  # a float tail op whose output int8 ops read: compute into a float copy, then quantize
            for j, t in enumerate(op.outputs):
                if t in quantized:
                    f = new_tensor(tensors[t], _name(tensors[t]) + "_float", schema.TensorType.FLOAT32)
                    float_copy[t] = f
                    op.outputs[j] = f
                    ops.append(convert_op("QUANTIZE", f, t))
    g.operators = ops
    for k, t in enumerate(g.outputs):
        if t in quantized:  # a backbone tensor as an output (not the case for BlazeFace): dequantize
            f = float_copy.get(t) or new_tensor(tensors[t], f"output_{k}", schema.TensorType.FLOAT32)
            if t not in float_copy:
                g.operators.append(convert_op("DEQUANTIZE", t, f))
            g.outputs[k] = f
    moved = {old: new for old, new in zip(inputs_before + outputs_before, list(g.inputs) + list(g.outputs))}
    for sig in model.signatureDefs or []:
        for entry in list(sig.inputs or []) + list(sig.outputs or []):
            entry.tensorIndex = moved.get(entry.tensorIndex, entry.tensorIndex)
    builder = flatbuffers.Builder(len(data) + 65536)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())

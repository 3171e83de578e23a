"""int8 post-training static quantization: calibration images, ONNX QDQ, PyTorch's FX int8.

Every path first applies :func:`~blazeface.export.equalize.equalize` (exact in float) and calibrates on
letterboxed images: a folder, or by default the bundled ``examples/`` photos with augmentations (flips,
zooms in and shifts, brightness/contrast, grey), optionally mostly replaced by mosaics of them
(:func:`mosaic_photos`). The head convolutions compute in float (regressors are input pixels spanning ±300:
one int8 step would be 2.4 px) on weights stored int8 (regressors) or float16
(classifiers: :func:`classifier_nodes`); 1×1 heads on the 8-bit body run channels-last (:func:`heads_as_matmul`).
Quantization-aware fine-tuning before either path: :mod:`blazeface.export.qat`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import operator
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..inference.files import quantized_engine
from ..inference.nchwc import cpu_flags
from ..io import iter_image_files, read_image
from ..preprocess import Letterbox, letterbox
from .equalize import equalize
from .qat import ACTIVATION_PERCENTILE, qat_finetune_fx, run_batches

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def default_calibration_dir() -> Path:
    if not EXAMPLES.is_dir():
        raise FileNotFoundError(
            f"no bundled examples at {EXAMPLES} (not a source checkout): pass a calibration folder of photos")
    return EXAMPLES


MOSAIC_GRIDS = (2, 3, 4, 6)
MOSAIC_SIDE = 512


def mosaic_photos(photos: Sequence[np.ndarray], count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` RGB ``uint8`` mosaics ``[512, 512, 3]`` (at most: a grid of k cells is ``512 // k * k`` wide):
    grids of ``k × k`` random square crops of ``photos`` (70–100% of a photo's shorter side, mirrored at random),
    k cycling through 2, 3, 4, 6, so the faces of a few portraits also appear at the small scales of crowds."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for n in range(count):
        k = MOSAIC_GRIDS[n % len(MOSAIC_GRIDS)]
        cell = MOSAIC_SIDE // k
        canvas = np.zeros((cell * k, cell * k, 3), np.uint8)
        for i in range(k):
            for j in range(k):
                photo = photos[int(rng.integers(len(photos)))]
                h, w = photo.shape[:2]
                side = int(min(h, w) * rng.uniform(0.7, 1.0))
                y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
                crop = np.asarray(Image.fromarray(np.ascontiguousarray(photo[y:y + side, x:x + side]))
                                  .resize((cell, cell), Image.BILINEAR))
                canvas[i * cell:(i + 1) * cell, j * cell:(j + 1) * cell] = crop[:, ::-1] if rng.random() < 0.5 else crop
        out.append(canvas)
    return out


def calibration_images(folder: str | Path | None, size: int, augment: bool = True, limit: int = 256,
                       seed: int = 0, mosaics: int = 0) -> torch.Tensor:
    """Letterboxed calibration inputs ``Tensor[N, 3, S, S]`` in [-1, 1] from the images in ``folder``.

    ``folder=None`` uses the bundled ``examples/``. With ``augment`` each photo also gives a mirror,
    zooms in (×1.25, ×1.5, ×2 around random points), contrast/brightness changes and grey.
    (No zoom-out: a photo framed by padding on every side drives the heads to ±10⁴ at some anchors and
    would stretch the calibrated ranges.) ``mosaics``: that many :func:`mosaic_photos` of the photos join them
    (augmented alike), and the batch is then sampled down to the size it has without them, so calibration
    costs the same memory and time; most of its images are then mosaics.
    """
    folder = Path(folder) if folder is not None else default_calibration_dir()
    files = list(iter_image_files([folder]))
    if not files:
        raise FileNotFoundError(f"no images in calibration folder {folder}")
    rng = np.random.default_rng(seed)
    own = len(files)
    photos: Iterable[np.ndarray] = (read_image(f) for f in files)  # one decoded photo at a time
    if mosaics:  # the mosaics crop from any photo, so then all of them are held at once
        loaded = list(photos)
        photos = loaded + mosaic_photos(loaded, mosaics, seed)
    out: list[torch.Tensor] = []
    for n, photo in enumerate(photos):
        if n == own:  # what the photos alone give: the mosaics take their place, not more room
            limit = min(limit, len(out))
        img = torch.from_numpy(photo.copy())
        h, w = int(img.shape[0]), int(img.shape[1])
        base = Letterbox.centered(w, h, size)
        variants = [(img, base)]
        if augment:
            for zoom in (1.25, 1.5, 2.0):
                side = base.side / zoom
                cx = w / 2 + rng.uniform(-0.15, 0.15) * w
                cy = h / 2 + rng.uniform(-0.15, 0.15) * h
                variants.append((img, Letterbox(w, h, size, cx - side / 2, cy - side / 2, side)))
            f32 = img.float()
            for gain, bias in ((0.7, 0.0), (1.2, 10.0), (1.0, -40.0)):
                variants.append(((f32 * gain + bias).clamp(0, 255).round(), base))
            grey = f32.mean(-1, keepdim=True).round().expand(-1, -1, 3).contiguous()
            variants.append((grey, base))
        for image, region in variants:
            t, _ = letterbox(image, size, region)
            out.append(t)
            if augment:
                out.append(t.flip(-1))
    batch = torch.stack(out)
    if len(batch) > limit:
        batch = batch[torch.from_numpy(rng.choice(len(batch), limit, replace=False))]
    return batch


def prepare_for_int8(net: nn.Module, images: torch.Tensor) -> nn.Module:
    """A copy of ``net`` equalized on ``images`` (the float function is unchanged)."""
    return equalize(copy.deepcopy(net).eval(), images)


# ------------------------------------------------------------------------------------------------
# ONNX Runtime QDQ
# ------------------------------------------------------------------------------------------------
def head_nodes(model: Any, outputs: tuple[str, ...] | None = None) -> list[str]:
    """Names of the nodes from the head convolutions to the graph outputs (Conv, Transpose, Reshape, Concat).

    Each path upstream from an output ends at its first plain (not depthwise) ``Conv``, or ``MatMul`` (a head
    :func:`heads_as_matmul` rewrote): the full-range heads are a 1×1 convolution, a 3×3 depthwise one and a
    depth-to-space, and the whole of it stays float.
    ``outputs``: start from these graph outputs only (default: all).
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    depthwise = set(depthwise_nodes(model))
    seen: list[str] = []
    stack = [o.name for o in model.graph.output if outputs is None or o.name in outputs]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.append(node.name)
        if node.op_type not in ("Conv", "MatMul") or node.name in depthwise:
            stack.extend(i for i in node.input if i in producer)
    return seen


def classifier_nodes(model: Any) -> list[str]:
    """The :func:`head_nodes` that feed the ``logits`` output: their weights are stored float16, not int8.

    A classifier's few weights span a wide range (back: the largest of ``classifiers.0`` is 345× its median), so
    one int8 step per output channel moves logits by ~0.4 and flips faces near the threshold (back: 357 anchors
    on wider_val_dev, against none for the regressors). float16 (:func:`_float16_weights`) is a relative step of
    2^-11 per weight and keeps short range's weights within 130 KB; the convolutions compute in float32.
    """
    return head_nodes(model, outputs=("logits",))


def head_feeding_nodes(model: Any, depth: int) -> list[str]:
    """Names of the nodes up to ``depth`` steps upstream of the head convolutions' inputs (``depth=3``: the
    last convolution, residual ``Add`` and ``ReLU`` of each block a head reads), to keep in float."""
    if depth <= 0:
        return []
    heads = set(head_nodes(model))
    producer = {o: n for n in model.graph.node for o in n.output}
    frontier = [producer[n.input[0]] for n in model.graph.node if n.name in heads and n.op_type == "Conv"
                and n.input[0] in producer and producer[n.input[0]].name not in heads]
    names: list[str] = []
    for _ in range(depth):
        upstream = []
        for node in frontier:
            if node.name not in names:
                names.append(node.name)
                upstream += [producer[i] for i in node.input if i in producer]
        frontier = upstream
    return names


def depthwise_nodes(model: Any) -> list[str]:
    """Names of the depthwise ``Conv`` nodes (``group`` > 1)."""
    from onnx import helper

    return [n.name for n in model.graph.node if n.op_type == "Conv"
            and any(a.name == "group" and helper.get_attribute_value(a) > 1 for a in n.attribute)]


def _weights_only_int8(model: Any, conv_names: set[str]) -> None:
    """Store the weights of float ``Conv`` nodes as per-channel int8 + ``DequantizeLinear``."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    new_nodes = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name not in conv_names or node.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        scale = np.abs(w).reshape(w.shape[0], -1).max(1) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        q = np.clip(np.round(w / scale.reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8)
        base = node.input[1]
        model.graph.initializer.remove(inits[base])
        model.graph.initializer.extend([
            numpy_helper.from_array(q, base + "_int8"),
            numpy_helper.from_array(scale, base + "_scale"),
            numpy_helper.from_array(np.zeros(w.shape[0], np.int8), base + "_zero"),
        ])
        new_nodes.append(helper.make_node("DequantizeLinear", [base + "_int8", base + "_scale", base + "_zero"],
                                          [base], name=base + "_dq", axis=0))
    for n in reversed(new_nodes):
        model.graph.node.insert(0, n)


def _float16_weights(model: Any, conv_names: set[str]) -> None:
    """Store the weights of float ``Conv`` nodes as float16 + ``Cast`` (folded at load: float32 compute)."""
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    weights = [n.input[1] for n in model.graph.node
               if n.op_type == "Conv" and n.name in conv_names and n.input[1] in inits]
    for base in weights:
        w = numpy_helper.to_array(inits[base])
        model.graph.initializer.remove(inits[base])
        model.graph.initializer.append(numpy_helper.from_array(w.astype(np.float16), base + "_fp16"))
        model.graph.node.insert(0, helper.make_node("Cast", [base + "_fp16"], [base], name=base + "_cast",
                                                    to=TensorProto.FLOAT))


def _producers_and_consumers(graph: Any) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The node writing each tensor, and the nodes reading it."""
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return producer, consumers


def integer_pads(model: Any) -> int:
    """Run QDQ ``DequantizeLinear → Pad → QuantizeLinear`` chains as one 8-bit ``Pad`` (in place).

    ORT fuses no QDQ ``Pad``: each residual's channel padding would run in float between a dequantize and a
    quantize. When both share one scale and zero point (ORT's quantizer gives ``Pad`` its input's), padding
    the 8-bit tensor with the zero point is the same function, bit for bit. Returns the number rewritten.
    """
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer, consumers = _producers_and_consumers(g)

    def same(a: str, b: str) -> bool:
        return a in inits and b in inits and np.array_equal(numpy_helper.to_array(inits[a]),
                                                            numpy_helper.to_array(inits[b]))

    done = 0
    for pad in list(g.node):
        if pad.op_type != "Pad" or len(pad.input) > 2:  # an explicit constant value: leave it
            continue
        dq, after = producer.get(pad.input[0]), consumers.get(pad.output[0], [])
        if dq is None or dq.op_type != "DequantizeLinear" or len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        q = after[0]
        if len(dq.input) < 3 or len(q.input) < 3 or not (same(dq.input[1], q.input[1]) and same(dq.input[2], q.input[2])):
            continue
        value = pad.name + "_zero_point"
        g.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[dq.input[2]]).reshape(()), value))
        pad.input[0] = dq.input[0]
        pad.input.append(value)
        pad.output[0] = q.output[0]
        g.node.remove(q)
        if len(consumers[dq.output[0]]) == 1:
            g.node.remove(dq)
        done += 1
    return done


def share_concat_scales(model: Any) -> int:
    """Quantize the inputs of each QDQ ``Concat`` with its output's scale and zero point (in place).

    In the channel-aligned graph a widening residual block computes its two channel halves separately and
    concatenates them; calibrated on their own, the halves get their own scales and the concatenation
    requantizes them (a second rounding). With the output's parameters, the concatenation is exact and each
    half is quantized once, on the range of the whole, as in the network as trained. Returns the number changed.
    """
    g = model.graph
    producer, consumers = _producers_and_consumers(g)
    done = 0
    for cat in g.node:
        after = consumers.get(cat.output[0], [])
        if cat.op_type != "Concat" or len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        scale, zero = after[0].input[1], after[0].input[2]
        pairs = []
        for name in cat.input:
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear" or len(consumers.get(q.output[0], [])) != 1 \
                    or len(consumers.get(dq.output[0], [])) != 1:
                break
            pairs.append((q, dq))
        else:
            for q, dq in pairs:
                q.input[1], q.input[2] = scale, zero
                dq.input[1], dq.input[2] = scale, zero
            done += 1
    _drop_unread_initializers(g)
    return done


def heads_as_matmul(model: Any) -> int:
    """Rewrite each head ``Conv 1×1 → Transpose(0, 2, 3, 1)`` that reads the 8-bit body as ``Transpose`` of the
    8-bit tensor ``→ DequantizeLinear → MatMul [C, O] (+ Add bias)`` (in place): the same function, in the
    channels-last layout ONNX Runtime's int8 body already computes in. ORT then drops the layout transposes
    between body and heads, and fuses the regressors' ``DequantizeLinear`` pair and ``MatMul`` into one integer
    GEMM with float output (``MatMulIntegerToFloat``: exact, where the ``Conv`` dequantized its input once per
    head and its int8 weights on every run); the classifiers' float16 weights stay float16 + ``Cast``.
    Heads of other shapes (full range's 1×1 → depthwise → depth-to-space) and float-fed heads are left alone.
    Returns the number rewritten.
    """
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer, consumers = _producers_and_consumers(g)
    heads = set(head_nodes(model))

    def columns(name: str, suffix: str) -> str:  # weight [O, C, 1, 1] -> new initializer [C, O]
        w = numpy_helper.to_array(inits[name])
        g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w.reshape(w.shape[0], -1).T), suffix))
        return suffix

    done = 0
    for conv in [n for n in g.node if n.name in heads and n.op_type == "Conv"]:
        a = {x.name: helper.get_attribute_value(x) for x in conv.attribute}
        after = consumers.get(conv.output[0], [])
        dq, w_from = producer.get(conv.input[0]), producer.get(conv.input[1])
        if (a.get("group", 1) != 1 or list(a.get("kernel_shape", [])) != [1, 1] or any(a.get("pads", []))
                or any(v != 1 for v in a.get("strides", [])) or any(v != 1 for v in a.get("dilations", []))
                or len(after) != 1 or after[0].op_type != "Transpose"
                or [int(v) for x in after[0].attribute if x.name == "perm"
                    for v in helper.get_attribute_value(x)] != [0, 2, 3, 1]
                or dq is None or dq.op_type != "DequantizeLinear"):
            continue
        p = conv.name + "_matmul"
        new = [helper.make_node("Transpose", [dq.input[0]], [p + "_x8"], name=p + "_nhwc", perm=[0, 2, 3, 1]),
               helper.make_node("DequantizeLinear", [p + "_x8", *dq.input[1:]], [p + "_x"], name=p + "_x_dq")]
        if w_from is not None and w_from.op_type == "DequantizeLinear":  # int8 per output channel: now columns
            new.append(helper.make_node("DequantizeLinear", [columns(w_from.input[0], p + "_w_int8"), *w_from.input[1:]],
                                        [p + "_w"], name=p + "_w_dq", axis=1))
        elif w_from is not None and w_from.op_type == "Cast":
            new.append(helper.make_node("Cast", [columns(w_from.input[0], p + "_w_fp16")], [p + "_w"],
                                        name=p + "_w_cast", to=TensorProto.FLOAT))
        elif conv.input[1] in inits:
            columns(conv.input[1], p + "_w")
        else:
            continue
        out = after[0].output[0]
        if len(conv.input) > 2 and conv.input[2]:
            new += [helper.make_node("MatMul", [p + "_x", p + "_w"], [p + "_y"], name=p),
                    helper.make_node("Add", [p + "_y", conv.input[2]], [out], name=p + "_bias")]
        else:
            new.append(helper.make_node("MatMul", [p + "_x", p + "_w"], [out], name=p))
        at = list(g.node).index(conv)
        g.node.remove(conv)
        g.node.remove(after[0])
        for k, node in enumerate(new):
            g.node.insert(at + k, node)
        done += 1
    _drop_unused(g)
    return done


def _drop_unused(graph: Any) -> None:
    """Remove the nodes whose outputs nothing reads (repeatedly), then the unread initializers."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    _drop_unread_initializers(graph)


def _drop_unread_initializers(graph: Any) -> None:
    """Remove the initializers no node reads."""
    read = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)


def share_duplicate_initializers(model: Any) -> int:
    """Point every use of an initializer equal to an earlier one (same type, shape and bytes: the all-zero
    zero points and biases of the quantizer) at that one, and drop the copy (in place). Returns the number dropped."""
    from onnx import numpy_helper

    g = model.graph
    first: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    for init in list(g.initializer):
        key = (init.data_type, tuple(init.dims), numpy_helper.to_array(init).tobytes())
        if key in first:
            rename[init.name] = first[key]
            g.initializer.remove(init)
        else:
            first[key] = init.name
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    return len(rename)


def quantize_onnx(float_path: str | Path, out_path: str | Path, images: torch.Tensor,
                  weight_type: str = "int8", calibrate: str = "percentile", percentile: float = ACTIVATION_PERCENTILE,
                  quant_format: str = "qdq", reduce_range: bool | None = None, int_pads: bool = True,
                  float_depthwise: bool = False, float_tail: int = 0, matmul_heads: bool = True) -> Path:
    """ONNX Runtime static 8-bit (QDQ), per-channel weights, calibrated on ``images [N, 3, S, S]``.

    Activation ranges: by default the ``percentile`` of all calibration values per tensor (outliers
    clipped; on wider_val_dev it keeps more faces identical to float than min-max, see benchmarks/RESULTS.md);
    ``calibrate="minmax"`` or ``"entropy"`` for ORT's other calibrators.
    ``float_path`` must hold the raw network (inputs ``input``; outputs ``regressors``, ``logits``).
    Activations are uint8 per tensor; weights are 8-bit per output channel: ``"int8"`` (default: symmetric,
    in 7 bits with ``reduce_range``, since the u8×s8 kernels of AVX2 CPUs without VNNI add pairs of products
    in int16, which saturates with 8-bit weights) or ``"uint8"`` (asymmetric, ORT's u8×u8 kernels: slower,
    and on the seed images and wider_val_dev more faces differ from float; benchmarks/RESULTS.md).
    The head convolutions run in float, the regressors' weights stored int8, the classifiers' float16
    (:func:`classifier_nodes`). ``quant_format="qoperator"`` writes ORT's
    fused ``QLinear*`` nodes instead of QDQ pairs; ``reduce_range`` (default: for ``"int8"`` weights) stores
    weights in 7 bits. ``float_depthwise=True`` leaves the depthwise convolutions in float (int8-stored
    weights): measured no faster and less accurate, kept for the benchmark. ``float_tail``: the nodes that many
    steps upstream of the heads' inputs stay float (:func:`head_feeding_nodes`; back: 45).
    The QDQ channel pads of the residuals run in 8 bits (:func:`integer_pads`; ``int_pads=False``: in float).
    The 1×1 heads that read the 8-bit body become channels-last ``MatMul`` nodes (:func:`heads_as_matmul`;
    ``matmul_heads=False``: ``Conv`` as exported).
    """
    try:
        import onnx
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:  # pragma: no cover
        raise ImportError("ONNX int8 needs onnx and onnxruntime: pip install 'blazeface[onnx]'") from exc
    import tempfile

    arrays = images.numpy().astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(range(len(arrays)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            i = next(self.it, None)
            return None if i is None else {"input": arrays[i:i + 1]}

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
        pre_model = onnx.load(str(pre))
        heads = head_nodes(pre_model)
        excluded = heads + (depthwise_nodes(pre_model) if float_depthwise else []) + head_feeding_nodes(pre_model, float_tail)
        qtmp = Path(tmp) / "q.onnx"
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress
            quantize_static(
                str(pre), str(qtmp), Reader(), per_channel=True, activation_type=QuantType.QUInt8,
                quant_format={"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[quant_format],
                weight_type=QuantType.QUInt8 if weight_type == "uint8" else QuantType.QInt8,
                reduce_range=weight_type != "uint8" if reduce_range is None else reduce_range,
                calibrate_method=methods[calibrate], nodes_to_exclude=excluded,
                extra_options={"CalibPercentile": percentile, "CalibTensorRangeSymmetric": False},
            )
        model = onnx.load(str(qtmp))
    present = {n.name for n in model.graph.node}
    classifiers = set(classifier_nodes(model))
    _weights_only_int8(model, {n for n in excluded if n in present and n not in classifiers})
    _float16_weights(model, classifiers)
    if int_pads:
        integer_pads(model)
    share_concat_scales(model)
    if matmul_heads:
        heads_as_matmul(model)
    share_duplicate_initializers(model)
    onnx.checker.check_model(model)
    out_path = Path(out_path)
    onnx.save_model(model, str(out_path))
    return out_path


# ------------------------------------------------------------------------------------------------
# PyTorch's own int8 (FX graph mode, oneDNN kernels)
# ------------------------------------------------------------------------------------------------
def enlarged_stride2_kernels(net: nn.Module) -> int:
    """Rewrite, in place, every ``ZeroPad2d((b, b+1, b, b+1))`` + stride-2 depthwise convolution of ``net`` as one
    convolution with a ``(k+1)×(k+1)`` kernel (a zero first row and column) and symmetric padding ``b + 1``.

    The same function, exact in float: output ``i`` reads inputs ``2i - b ... 2i - b + k - 1`` either way. With no
    pad in front, PyTorch's int8 depthwise kernel runs straight on the int8 input (the ``ZeroPad2d`` ran in float,
    between a dequantize and a quantize: 0.2-0.3 ms at 24x128x128 with the whole convolution, 1.7-2.1 ms with glibc's
    default malloc, which faults the padded buffer in on every run), and a 4×4 int8 depthwise convolution takes as
    long as a 3×3 one (91 against 97 us; ``benchmarks/int8_torch_ops.py``). Other convolutions (the
    3-channel stems) keep their pad: a 6×6 int8 stem took 1.8× the 5×5 one. Returns how many were rewritten.
    """
    count = 0
    for module in net.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            pad, conv = module[i], module[i + 1]
            if not (isinstance(pad, nn.ZeroPad2d) and isinstance(conv, nn.Conv2d)):
                continue
            left, right, top, bottom = pad.padding
            if ((left, right) != (top, bottom) or right != left + 1 or conv.stride != (2, 2) or conv.padding != (0, 0)
                    or conv.groups != conv.in_channels or conv.groups == 1):
                continue
            k = conv.kernel_size[0]
            big = nn.Conv2d(conv.in_channels, conv.out_channels, k + 1, 2, right, groups=conv.groups,
                            bias=conv.bias is not None)
            with torch.no_grad():
                big.weight.zero_()
                big.weight[:, :, 1:, 1:] = conv.weight
                if conv.bias is not None:
                    big.bias.copy_(conv.bias)
            module[i] = nn.Identity()
            module[i + 1] = big
            count += 1
    return count


def cpu_has_vnni() -> bool:
    """Whether this CPU has AVX-512 VNNI or AVX-VNNI (int8 dot products that accumulate without saturating)."""
    return bool({"avx512_vnni", "avx_vnni"} & cpu_flags())


class _FloatMaxPool(nn.Module):
    """A max pool of a quantized tensor computed in float, requantized with the input's own scale (exact: a max
    pool picks input values). PyTorch's int8 2×2 max pool took 390-660 us at 24x128x128, this 200-270
    (``benchmarks/int8_torch_ops.py``). A float input (a pool after a float block) is pooled as it is; the tensor
    type is fixed per graph, so a trace keeps one branch."""

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_quantized:
            return self.pool(x)
        return torch.quantize_per_tensor(self.pool(x.dequantize()), x.q_scale(), x.q_zero_point(), x.dtype)


def float_max_pools(model: Any) -> int:
    """Wrap, in place, every max pool of a converted FX int8 ``GraphModule`` that may read a quantized tensor
    (any but a ``dequantize``'s output) in :class:`_FloatMaxPool`. (FX runs a max pool whose qconfig is ``None``
    on a quantized input as it is, in int8, when nothing float sits between it and the next quantized op.)
    Returns how many were wrapped."""
    count = 0
    for node in model.graph.nodes:
        if node.op != "call_module" or not isinstance(model.get_submodule(node.target), nn.MaxPool2d):
            continue
        source = node.args[0]
        if source.op == "call_method" and source.target == "dequantize":
            continue  # already float
        parent, _, name = node.target.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, name, _FloatMaxPool(model.get_submodule(node.target)))
        count += 1
    model.recompile()
    return count


PIXEL_STEP = 1 / 127.5  # the models' input: x / 127.5 - 1 on uint8 pixels


def exact_pixel_input(model: Any) -> bool:
    """Quantize the network input of a converted FX int8 ``GraphModule`` without rounding error, in place.

    The input, ``x = p / 127.5 - 1`` for uint8 pixels ``p`` (what letterboxing gives), sits half a step off any
    uint8 grid with an integer zero point: the calibrated one (scale 0.007839, zero point 128 for short range) moved
    the pixels of wider_val_dev by 0.46 grey levels on average, -0.18 on the mean, which alone cost short range's
    float network 0.13 px of box error (``benchmarks/int8_torch_sensitivity.py``). Here the input is shifted by
    half a step before it is quantized with scale ``1 / 127.5`` and zero point 127 (then ``q = p`` exactly) and
    the first convolution's bias takes ``-shift * sum(weights)``: the same function in float. Only zero padding
    differs: a padded tap reads the shifted zero, one half step, as 0 (the convolution's outer rows and columns).
    Inputs off the pixel grid are quantized as before, to the nearest step. Returns False, changing nothing,
    unless the input goes through zero pads only to one quantize and one quantized convolution.
    """
    quantize = next((n for n in model.graph.nodes if n.op == "call_function" and n.target is torch.quantize_per_tensor),
                    None)
    if quantize is None or len(quantize.users) != 1:
        return False
    source = quantize.args[0]
    while source.op == "call_module" and isinstance(model.get_submodule(source.target), nn.ZeroPad2d):
        source = source.args[0]
    conv_node = next(iter(quantize.users))
    if source.op != "placeholder" or conv_node.op != "call_module":
        return False
    conv = model.get_submodule(conv_node.target)
    if not hasattr(conv, "set_weight_bias"):
        return False
    half = PIXEL_STEP / 2
    weight, bias = conv.weight(), conv.bias()
    shift = weight.dequantize().sum(dim=(1, 2, 3)) * half
    conv.set_weight_bias(weight, (bias if bias is not None else torch.zeros_like(shift)) - shift)
    with model.graph.inserting_before(quantize):
        shifted = model.graph.call_function(operator.add, (quantize.args[0], half))
    quantize.update_arg(0, shifted)
    scale, zero_point = (getattr(model, a.target) for a in quantize.args[1:3])
    scale.fill_(PIXEL_STEP)
    zero_point.fill_(127)
    model.recompile()
    return True


def int8_activation_reduce_range() -> bool:
    """Whether PyTorch int8 activations keep to 7 bits on this CPU: where it lacks VNNI (AVX2's int8 dot product,
    ``vpmaddubsw``, saturates int16 sums of two 8-bit products; VNNI does not)."""
    return not cpu_has_vnni()


def fused_residual_backend_config() -> Any:
    """oneDNN's FX ``BackendConfig`` plus ``F.relu(conv(x) + skip)`` → one ``quantized::conv2d_add_relu``.

    oneDNN's own config matches the residual sum only when the ReLU is an ``nn.ReLU`` module; BlazeBlock calls
    ``F.relu``. Fused, the sum is taken on the convolution's int32 accumulator (no separate int8 add, no
    requantization of the convolution output); the fused kernel runs only under the ``onednn`` quantized engine. It
    writes its result into the ``skip`` tensor, in place: :func:`convert_torch_fx` refuses a graph that reads a
    ``skip`` after its sum (:func:`overwritten_residuals`).
    """
    import torch.ao.nn.intrinsic as nni
    import torch.nn.functional as F
    from torch.ao.quantization.backend_config import BackendPatternConfig, get_onednn_backend_config
    from torch.ao.quantization.backend_config.onednn import conv_dtype_configs, observation_type
    from torch.ao.quantization.utils import MatchAllNode

    def fuse(is_qat: bool, relu: Any, add_pattern: Any) -> nn.Module:
        add, conv, _ = add_pattern
        return nni.ConvAddReLU2d(conv, add, nn.ReLU())

    config = get_onednn_backend_config()
    for add in (operator.add, torch.add):
        config.set_backend_pattern_config(
            BackendPatternConfig()._set_pattern_complex_format((F.relu, (add, nn.Conv2d, MatchAllNode)))
            .set_observation_type(observation_type).set_dtype_configs(conv_dtype_configs).set_fuser_method(fuse)
            ._set_root_node_getter(lambda pattern: pattern[1][1])
            ._set_extra_inputs_getter(lambda pattern: [pattern[1][2]])
            .set_fused_module(nni.ConvAddReLU2d))
    return config


def overwritten_residuals(model: Any) -> list[str]:
    """The fused residual convolutions (:func:`fused_residual_backend_config`) of a converted FX ``GraphModule``
    whose ``skip`` input, which the kernel overwrites with its result, is read again after them (names of the
    nodes that read it late). Empty for every shipped model: each block's input is read by its depthwise
    convolution before the sum."""
    from torch.ao.nn.intrinsic.quantized import ConvAddReLU2d

    order = {node: i for i, node in enumerate(model.graph.nodes)}
    late = []
    for node in model.graph.nodes:
        if node.op == "call_module" and isinstance(model.get_submodule(str(node.target)), ConvAddReLU2d):
            skip = node.args[1]
            late += [user.name for user in skip.users if order[user] > order[node]]
    return late


TORCH_INT8_ENGINE = "onednn"


def torch_fx_qconfig(reduce_range: bool = False) -> Any:
    """The ``QConfig`` of :func:`quantize_torch_fx`: uint8 activations from a histogram observer (7 bits with
    ``reduce_range``), per-channel symmetric int8 weights."""
    from torch.ao.quantization import QConfig
    from torch.ao.quantization.observer import HistogramObserver, default_per_channel_weight_observer

    return QConfig(activation=HistogramObserver.with_args(reduce_range=reduce_range),
                   weight=default_per_channel_weight_observer)


def prepare_torch_fx(net: nn.Module, images: torch.Tensor, reduce_range: bool = False,
                     float_modules: tuple[str, ...] = ()) -> tuple[Any, nn.Module]:
    """The observed (``prepare_fx``) graph of :func:`quantize_torch_fx`, not yet calibrated, and the float network it
    was made from (``net`` equalized on ``images``, stride-2 kernels enlarged: the same function as ``net``)."""
    import warnings

    from torch.ao.quantization import QConfigMapping, get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    model = prepare_for_int8(net, images)
    enlarged_stride2_kernels(model)
    qmap: QConfigMapping = get_default_qconfig_mapping(TORCH_INT8_ENGINE).set_global(torch_fx_qconfig(reduce_range))
    for name, _ in model.named_modules():
        if name.startswith(("regressors", "classifiers")) or name in float_modules:
            qmap = qmap.set_module_name(name, None)
    # the heads' concatenation too (the only torch.cat): quantized, it clipped every logit to <= 0, the histogram
    # observer taking the rare positive logits for outliers (every score 0.5)
    qmap = qmap.set_object_type(torch.cat, None).set_object_type(nn.ZeroPad2d, None).set_object_type(nn.MaxPool2d, None)
    float_model = copy.deepcopy(model).eval()
    with warnings.catch_warnings(), quantized_engine(TORCH_INT8_ENGINE):
        warnings.simplefilter("ignore")
        prepared = prepare_fx(model, qmap, (images[:1],), backend_config=fused_residual_backend_config())
    return prepared, float_model


def convert_torch_fx(prepared: Any, pixel_input: bool = True) -> Any:
    """The int8 ``GraphModule`` of a calibrated :func:`prepare_torch_fx` graph (``convert_fx``, then
    :func:`float_max_pools` and, with ``pixel_input``, :func:`exact_pixel_input`). Raises ``ValueError`` for a
    graph whose fused residual sums would overwrite a tensor read later (:func:`overwritten_residuals`)."""
    import warnings

    from torch.ao.quantization.quantize_fx import convert_fx

    with warnings.catch_warnings(), quantized_engine(TORCH_INT8_ENGINE):
        warnings.simplefilter("ignore")
        quantized = convert_fx(prepared, backend_config=fused_residual_backend_config())
    if late := overwritten_residuals(quantized):
        raise ValueError(f"int8 residual sums write into their skip input in place, but {', '.join(late)} read it "
                         "afterwards: keep those blocks float (float_modules)")
    float_max_pools(quantized)
    if pixel_input:
        exact_pixel_input(quantized)
    return quantized


def quantize_torch_fx(net: nn.Module, images: torch.Tensor, reduce_range: bool = False,
                      float_modules: tuple[str, ...] = (), pixel_input: bool = True, qat_steps: int = 0,
                      qat_seeds: Sequence[int] = (0,), qat_log: Callable[[int, float], None] | None = None) -> nn.Module:
    """PyTorch int8 (``torch.ao.quantization`` FX mode, oneDNN kernels): per-channel weights, calibrated on ``images``.

    Activations are uint8 from a histogram observer; ``reduce_range`` keeps them to 7 bits
    (:func:`int8_activation_reduce_range` picks it for a CPU). 8 bits localize better: the worst clear seed face of
    short range sat at IoU 0.93 against 0.85 with 7 (``72e825e``, before the residual fusion;
    ``benchmarks/RESULTS.md``); on wider_val_dev, before :func:`exact_pixel_input`, 7 bits matched 43 / 113 / 71 /
    156 faces at IoU 0.9 against 8 bits' 48 / 126 / 103 / 169 (short range, full range, sparse, back;
    ``benchmarks/torchscript_int8_accuracy.py [--reduce-range]``).
    Residual sums and their ReLU fuse into the convolution before them (:func:`fused_residual_backend_config`);
    stride-2 depthwise convolutions take an enlarged kernel instead of a pad (:func:`enlarged_stride2_kernels`);
    zero pads (the stems') and 2×2 max pools run in float (:class:`_FloatMaxPool`). The head convolutions and
    their concatenation stay float.
    ``float_modules``: names of submodules (``"blocks.28"``, ``"fpn.2"``) that also stay float, a float tail for
    accuracy. ``pixel_input``: inputs are ``p / 127.5 - 1`` for uint8 pixels ``p``, quantized exactly
    (:func:`exact_pixel_input`). ``qat_steps``: before converting, fine-tune that many steps under this int8
    rounding, distilled from the float network on ``images`` (:func:`~blazeface.export.qat.qat_finetune_fx`;
    ``qat_seeds``: one fine-tuning per seed of its batch sampling, weights averaged; ``qat_log(step, loss)`` every 25
    steps). Returns a ``GraphModule`` with quantized kernels (CPU only) that runs
    under the :data:`TORCH_INT8_ENGINE` quantized engine (``torch.backends.quantized.engine``).
    """
    prepared, float_model = prepare_torch_fx(net, images, reduce_range, float_modules)
    if qat_steps:
        qat_finetune_fx(prepared, float_model, images, torch_fx_qconfig(reduce_range).activation, steps=qat_steps,
                        seeds=qat_seeds, exact_input=pixel_input, log=qat_log)
    else:
        run_batches(prepared, images)
    return convert_torch_fx(prepared, pixel_input)

"""Convert MediaPipe's TFLite face detectors to ``.safetensors`` for :class:`~blazeface.nn.BlazeNet`.

Weights are mapped by following both graphs, not by the order tensors are listed in: every
convolution of the TFLite graph and of the traced PyTorch network is described by the set of
convolutions that feed it (through ReLU, PAD, ADD, pooling, resizing, reshapes). Walking the
PyTorch network in execution order, each of its convolutions is paired with the one TFLite
convolution that has the same feeders, kind, kernel, stride and channels; anything ambiguous,
missing, left over or of an unsupported op type stops the conversion with a message naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.fx
from torch import nn

from ..nn.blazenet import BlazeNet
from ..registry import create_model, get_config, list_models, sha256_file
from .tflite_graph import TFLiteFormatError, TFLiteGraph

INPUT = -1  # the graph input, as a "feeder"

SUPPORTED_OPS = {
    "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "DENSIFY", "RELU", "ADD", "PAD", "MAX_POOL_2D",
    "RESHAPE", "CONCATENATION", "RESIZE_BILINEAR", "DEPTH_TO_SPACE",
    "TRANSPOSE", "QUANTIZE",  # files written by `blazeface export --format tflite` (litert-torch), float or int8
}


class ConversionError(ValueError):
    """The TFLite graph does not match the architecture it is converted to."""


@dataclass(frozen=True)
class ConvLayer:
    """One convolution: weight in PyTorch layout ``[O, I/groups, kh, kw]``, bias ``[O]``."""

    key: str  # TFLite: the op's output tensor name; PyTorch: the parameter prefix
    depthwise: bool
    stride: int
    weight_shape: tuple[int, ...]
    feeders: frozenset[int]


def _tflite_layers(graph: TFLiteGraph) -> tuple[list[ConvLayer], dict[int, tuple[np.ndarray, np.ndarray]]]:
    """The graph's convolutions in op order, and their weights keyed by op index."""
    unknown = sorted({op.type for op in graph.operators} - SUPPORTED_OPS)
    if unknown:
        raise ConversionError(f"{graph.source}: unsupported TFLite ops {', '.join(unknown)}: not a BlazeFace graph")
    if len(graph.inputs) != 1:
        raise ConversionError(f"{graph.source}: expected one input tensor, found {len(graph.inputs)}")
    feeders: dict[int, frozenset[int]] = {graph.inputs[0]: frozenset([INPUT])}
    layers: list[ConvLayer] = []
    weights: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for op in graph.operators:
        if op.type in ("DEQUANTIZE", "DENSIFY") and graph.is_constant(op.inputs[0]):
            continue  # stored weights; a DEQUANTIZE of activations (int8 graphs) passes its feeders on
        data_inputs = [t for t in op.inputs if t >= 0 and not graph.is_constant(t)]
        fed = frozenset().union(*(feeders.get(t, frozenset()) for t in data_inputs))
        if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            o = op.options
            if o.get("DilationHFactor", 1) != 1 or o.get("DilationWFactor", 1) != 1:
                raise ConversionError(f"{graph.source}: dilated convolution at op {op.index} is not supported")
            if o.get("FusedActivationFunction", 0) not in (0, 1):
                raise ConversionError(f"{graph.source}: op {op.index} has a fused activation other than ReLU")
            if o.get("StrideH") != o.get("StrideW"):
                raise ConversionError(f"{graph.source}: op {op.index} has unequal strides")
            kernel = graph.value(op.inputs[1])
            bias = graph.value(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else np.zeros(kernel.shape[0 if op.type == "CONV_2D" else 3], np.float32)
            depthwise = op.type == "DEPTHWISE_CONV_2D"
            if depthwise:
                if o.get("DepthMultiplier", 1) != 1:
                    raise ConversionError(f"{graph.source}: depth multiplier at op {op.index} is not supported")
                w = kernel.transpose(3, 0, 1, 2)  # [1, kh, kw, C] -> [C, 1, kh, kw]
            else:
                w = kernel.transpose(0, 3, 1, 2)  # [O, kh, kw, I] -> [O, I, kh, kw]
            name = graph.tensors[op.outputs[0]].name
            layers.append(ConvLayer(name, depthwise, int(o.get("StrideH", 1)), tuple(w.shape), fed))
            weights[len(layers) - 1] = (np.ascontiguousarray(w, dtype=np.float32), bias.astype(np.float32))
            for t in op.outputs:
                feeders[t] = frozenset([len(layers) - 1])
        else:
            for t in op.outputs:
                feeders[t] = fed
    return layers, weights


def _torch_layers(model: nn.Module) -> list[ConvLayer]:
    """The traced network's convolutions in execution order (feeders index this list)."""
    traced = torch.fx.symbolic_trace(model)
    feeders: dict[torch.fx.Node, frozenset[int]] = {}
    layers: list[ConvLayer] = []
    for node in traced.graph.nodes:
        if node.op == "placeholder":
            feeders[node] = frozenset([INPUT])
            continue
        fed = frozenset().union(*(feeders.get(n, frozenset()) for n in node.all_input_nodes))
        module = traced.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(module, nn.Conv2d):
            depthwise = module.groups > 1
            if depthwise and module.groups != module.in_channels:
                raise ConversionError(f"{node.target}: grouped convolution is not a depthwise one")
            layers.append(ConvLayer(str(node.target), depthwise, int(module.stride[0]), tuple(module.weight.shape), fed))
            feeders[node] = frozenset([len(layers) - 1])
        else:
            feeders[node] = fed
    return layers


def map_layers(source: list[ConvLayer], target: list[ConvLayer], where: str = "TFLite graph") -> dict[int, int]:
    """Pair each ``target`` (PyTorch) convolution with one ``source`` (TFLite) convolution.

    Returns ``{target_index: source_index}``; raises :class:`ConversionError` unless the pairing is
    complete and unambiguous.
    """
    mapping: dict[int, int] = {}
    used: set[int] = set()
    for ti, t in enumerate(target):
        want = frozenset(INPUT if f == INPUT else mapping[f] for f in t.feeders)
        candidates = [
            si for si, s in enumerate(source)
            if si not in used and s.feeders == want and s.depthwise == t.depthwise
            and s.stride == t.stride and s.weight_shape == t.weight_shape
        ]
        if len(candidates) != 1:
            shape_match = [source[si].key for si, s in enumerate(source) if si not in used and s.weight_shape == t.weight_shape]
            reason = "no" if not candidates else f"{len(candidates)} ambiguous"
            raise ConversionError(
                f"{where}: {reason} match for layer {t.key} "
                f"({'depthwise ' if t.depthwise else ''}weight {list(t.weight_shape)}, stride {t.stride}); "
                f"unused layers of that shape: {shape_match[:4] or 'none'}"
            )
        mapping[ti] = candidates[0]
        used.add(candidates[0])
    if len(used) != len(source):
        extra = [source[i].key for i in range(len(source)) if i not in used]
        raise ConversionError(f"{where}: {len(extra)} convolutions have no place in the architecture: {extra[:4]}")
    return mapping


def tflite_state_dict(graph: TFLiteGraph, model: BlazeNet) -> dict[str, torch.Tensor]:
    """Map the graph's weights onto ``model``'s parameter names (shapes checked)."""
    source, weights = _tflite_layers(graph)
    target = _torch_layers(model)
    mapping = map_layers(source, target, graph.source)
    state: dict[str, torch.Tensor] = {}
    for ti, si in mapping.items():
        w, b = weights[si]
        state[f"{target[ti].key}.weight"] = torch.from_numpy(w.copy())
        state[f"{target[ti].key}.bias"] = torch.from_numpy(b.copy())
    expected = model.state_dict()
    if set(state) != set(expected):
        missing = sorted(set(expected) - set(state))
        raise ConversionError(f"{graph.source}: parameters not covered by the graph: {missing[:4]}")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise ConversionError(f"{graph.source}: {k} has shape {list(v.shape)}, expected {list(expected[k].shape)}")
    return {k: state[k] for k in expected}  # the model's own order


def _check_io(graph: TFLiteGraph, model: BlazeNet) -> None:
    size = model.input_size
    shape = graph.tensors[graph.inputs[0]].shape
    if tuple(shape[1:]) not in ((size, size, 3), (3, size, size)):
        raise ConversionError(f"{graph.source}: input shape {list(shape)} does not fit a {size}×{size}×3 network")
    outputs = [tuple(graph.tensors[t].shape[1:]) for t in graph.outputs]
    # regressors and logits, concatenated or split per head (the vendor layout)
    for channels in (16, 1):
        anchors = sum(o[0] for o in outputs if len(o) == 2 and o[1] == channels)
        outputs = [o for o in outputs if not (len(o) == 2 and o[1] == channels)] + [(anchors, channels)]
    outputs = sorted(outputs)
    expected = sorted([(model.spec.num_anchors, 16), (model.spec.num_anchors, 1)])
    if outputs != expected:
        raise ConversionError(f"{graph.source}: outputs {outputs} are not regressors/logits for {model.spec.num_anchors} anchors")


def detect_model_name(graph: TFLiteGraph) -> str:
    """The registered model whose architecture the graph matches (first match, shipped models first)."""
    errors = []
    for name in list_models(pretrained=True) + list_models(pretrained=False):
        model = create_model(name, pretrained=False)
        try:
            _check_io(graph, model)
            tflite_state_dict(graph, model)
        except ConversionError as exc:
            errors.append(f"{name}: {exc}")
            continue
        return name
    raise ConversionError(f"{graph.source} matches no registered architecture:\n  " + "\n  ".join(errors))


def convert_tflite(path: str | Path, model: str | None = None) -> tuple[str, dict[str, torch.Tensor]]:
    """Read a TFLite face detector and return ``(model_name, state_dict)``.

    ``model`` names the registered architecture; ``None`` detects it from the graph.
    """
    graph = TFLiteGraph.from_file(path)
    if model is None:  # a known source file names its model (front_2019 shares short_range's architecture)
        digest = sha256_file(path)
        model = next((n for n in list_models() if get_config(n).source_sha256 == digest), None)
    name = get_config(model).name if model else detect_model_name(graph)
    net = create_model(name, pretrained=False)
    _check_io(graph, net)
    return name, tflite_state_dict(graph, net)


_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
                       torch.int32: "I32", torch.int8: "I8", torch.uint8: "U8"}


def write_safetensors(state: dict[str, torch.Tensor], out: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a ``.safetensors`` file byte-for-byte deterministically (sorted names and metadata).

    (``safetensors.torch.save_file`` orders the metadata differently from run to run.)
    """
    import json

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    blobs = []
    offset = 0
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        if t.dtype not in _SAFETENSORS_DTYPES:
            raise TypeError(f"{name}: dtype {t.dtype} cannot be written to safetensors here")
        data = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(out, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    return out


def save_weights(state: dict[str, torch.Tensor], out: str | Path, model: str, source: str | Path | None = None) -> Path:
    """Write ``state`` as ``.safetensors`` with deterministic metadata (model, source file and sha256)."""
    meta = {"model": model, "format": "blazeface"}
    if source is not None:
        meta["source_sha256"] = sha256_file(source)
        meta["source_file"] = Path(source).name
    return write_safetensors(state, out, meta)


def convert_file(path: str | Path, out: str | Path, model: str | None = None) -> tuple[str, Path]:
    """Convert ``path`` (.tflite) to ``out`` (.safetensors); returns ``(model_name, out)``."""
    name, state = convert_tflite(path, model)
    return name, save_weights(state, out, name, path)


def tflite_raw_outputs(path: str | Path, images: np.ndarray, num_threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Run the TFLite interpreter (``ai-edge-litert``) on ``images: [B, S, S, 3]`` float32 in [-1, 1].

    Returns ``(regressors [B, A, 16], logits [B, A, 1])``, one image at a time as MediaPipe does.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:  # pragma: no cover
        raise ImportError("comparing against TFLite needs ai-edge-litert: pip install 'blazeface[convert]'") from exc
    interp = Interpreter(model_path=str(path), num_threads=num_threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    outs = {tuple(d["shape"][1:]): d["index"] for d in interp.get_output_details()}
    reg_idx = next(v for k, v in outs.items() if k[-1] == 16)
    cls_idx = next(v for k, v in outs.items() if k[-1] == 1)
    regs, logits = [], []
    for img in images.astype(np.float32):
        interp.set_tensor(inp, img[None])
        interp.invoke()
        regs.append(interp.get_tensor(reg_idx)[0])
        logits.append(interp.get_tensor(cls_idx)[0])
    return np.stack(regs), np.stack(logits)


@dataclass(frozen=True)
class ParityReport:
    """Largest differences between PyTorch and TFLite on the same input."""

    max_score_diff: float
    max_regressor_diff: float

    def ok(self, score_tol: float = 1e-4, regressor_tol: float = 1e-3) -> bool:
        return self.max_score_diff <= score_tol and self.max_regressor_diff <= regressor_tol


def compare_with_tflite(model: BlazeNet, path: str | Path, images: np.ndarray) -> ParityReport:
    """Run ``model`` and the TFLite file on ``images: [B, S, S, 3]`` in [-1, 1]; report the differences."""
    ref_reg, ref_logit = tflite_raw_outputs(path, images)
    with torch.inference_mode():
        reg, logit = model(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float())
    sig = lambda x: 0.5 * (1 + np.tanh(np.clip(x, -100, 100) / 2))  # noqa: E731  (overflow-free sigmoid)
    return ParityReport(
        float(np.abs(sig(logit.numpy()) - sig(ref_logit)).max()),
        float(np.abs(reg.numpy() - ref_reg).max()),
    )


__all__ = [
    "ConversionError", "TFLiteFormatError", "convert_tflite", "convert_file", "save_weights",
    "tflite_state_dict", "detect_model_name", "compare_with_tflite", "tflite_raw_outputs", "ParityReport",
]

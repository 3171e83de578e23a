"""A small reader for TFLite flatbuffers: operators, tensors, and constant values.

Constants are resolved through the ops that produce them (``DEQUANTIZE`` of fp16 or int8 data,
``DENSIFY`` of sparse data), so a caller asks for the float value an op actually consumes.
Needs the ``tflite`` package (the ``convert`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class TFLiteFormatError(ValueError):
    """The file is not a TFLite model this reader understands."""


_NUMPY_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8}


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: int
    data: bytes | None
    quant_scale: np.ndarray | None = None
    quant_zero_point: np.ndarray | None = None
    quant_axis: int = 0
    sparsity: Any = None


@dataclass
class Operator:
    index: int
    type: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)


def _import_tflite() -> Any:
    try:
        import tflite  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading .tflite files needs the 'tflite' package: pip install 'blazeface[convert]'") from exc
    return tflite


def _op_name(tflite: Any, code: Any) -> str:
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == tflite.BuiltinOperator.CUSTOM:
        return "CUSTOM:" + (code.CustomCode() or b"").decode()
    return names.get(builtin, f"BUILTIN_{builtin}")


def _options(tflite: Any, op_type: str, op: Any) -> dict[str, Any]:
    table = op.BuiltinOptions()
    if table is None:
        return {}
    classes = {
        "CONV_2D": tflite.Conv2DOptions,
        "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
        "MAX_POOL_2D": tflite.Pool2DOptions,
        "ADD": tflite.AddOptions,
        "RESIZE_BILINEAR": tflite.ResizeBilinearOptions,
        "DEPTH_TO_SPACE": tflite.DepthToSpaceOptions,
        "CONCATENATION": tflite.ConcatenationOptions,
    }
    cls = classes.get(op_type)
    if cls is None:
        return {}
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    out: dict[str, Any] = {}
    for key in ("Padding", "StrideH", "StrideW", "FusedActivationFunction", "DepthMultiplier",
                "DilationHFactor", "DilationWFactor", "FilterHeight", "FilterWidth", "AlignCorners",
                "HalfPixelCenters", "BlockSize", "Axis"):
        getter = getattr(opts, key, None)
        if getter is not None:
            out[key] = getter()
    return out


class TFLiteGraph:
    """The first subgraph of a TFLite model."""

    def __init__(self, buffer: bytes, source: str = "<bytes>") -> None:
        if len(buffer) < 8 or buffer[4:8] != b"TFL3":
            raise TFLiteFormatError(f"{source} is not a TFLite flatbuffer (no 'TFL3' identifier)")
        tflite = _import_tflite()
        self.source = source
        try:
            model = tflite.Model.GetRootAsModel(buffer, 0)
            if model.SubgraphsLength() < 1:
                raise TFLiteFormatError(f"{source} has no subgraph")
            graph = model.Subgraphs(0)
            self.tensors = [self._read_tensor(model, graph.Tensors(i), i) for i in range(graph.TensorsLength())]
            self.operators = []
            for i in range(graph.OperatorsLength()):
                op = graph.Operators(i)
                op_type = _op_name(tflite, model.OperatorCodes(op.OpcodeIndex()))
                self.operators.append(Operator(
                    i, op_type,
                    tuple(int(v) for v in op.InputsAsNumpy()) if op.InputsLength() else (),
                    tuple(int(v) for v in op.OutputsAsNumpy()) if op.OutputsLength() else (),
                    _options(tflite, op_type, op),
                ))
            self.inputs = tuple(int(v) for v in graph.InputsAsNumpy())
            self.outputs = tuple(int(v) for v in graph.OutputsAsNumpy())
        except TFLiteFormatError:
            raise
        except Exception as exc:  # a truncated or corrupt flatbuffer fails somewhere in the accessors
            raise TFLiteFormatError(f"{source} is truncated or corrupt: {type(exc).__name__}: {exc}") from exc
        self.producer = {t: op for op in self.operators for t in op.outputs}
        self.consumers: dict[int, list[Operator]] = {}
        for op in self.operators:
            for t in op.inputs:
                if t >= 0:
                    self.consumers.setdefault(t, []).append(op)

    @classmethod
    def from_file(cls, path: str | Path) -> "TFLiteGraph":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"TFLite model not found: {path}")
        return cls(path.read_bytes(), str(path))

    @staticmethod
    def _read_tensor(model: Any, t: Any, index: int) -> Tensor:
        buf = model.Buffers(t.Buffer())
        data = None
        if buf is not None and buf.DataLength() > 0:
            data = buf.DataAsNumpy().tobytes()
        shape = tuple(int(v) for v in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        tensor = Tensor(index, (t.Name() or b"").decode(), shape, t.Type(), data, sparsity=t.Sparsity())
        q = t.Quantization()
        if q is not None and q.ScaleLength() > 0:
            tensor.quant_scale = q.ScaleAsNumpy().astype(np.float64)
            tensor.quant_zero_point = q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength() else np.zeros(1, np.int64)
            tensor.quant_axis = q.QuantizedDimension()
        return tensor

    def is_constant(self, index: int) -> bool:
        """True if tensor ``index`` is stored data or computed only from stored data."""
        if self.tensors[index].data is not None:
            return True
        op = self.producer.get(index)
        return op is not None and op.type in ("DEQUANTIZE", "DENSIFY") and self.is_constant(op.inputs[0])

    def raw_value(self, index: int) -> np.ndarray:
        """The stored value of tensor ``index`` in its own type and shape (sparse data densified)."""
        t = self.tensors[index]
        if t.dtype not in _NUMPY_TYPES:
            raise TFLiteFormatError(f"{self.source}: tensor {t.name!r} has unsupported type {t.dtype}")
        if t.data is None:
            raise TFLiteFormatError(f"{self.source}: tensor {t.name!r} holds no data")
        flat = np.frombuffer(t.data, dtype=_NUMPY_TYPES[t.dtype])
        if t.sparsity is not None:
            return _densify(flat, t.shape, t.sparsity)
        if flat.size != int(np.prod(t.shape)):
            raise TFLiteFormatError(f"{self.source}: tensor {t.name!r} has {flat.size} values for shape {t.shape}")
        return flat.reshape(t.shape)

    def native_value(self, index: int) -> np.ndarray:
        """Tensor ``index`` in its stored type, following ``DENSIFY`` (not ``DEQUANTIZE``)."""
        op = self.producer.get(index)
        if op is None:
            return self.raw_value(index)
        if op.type == "DENSIFY":
            return self.native_value(op.inputs[0])
        raise TFLiteFormatError(f"{self.source}: tensor {self.tensors[index].name!r} is computed by {op.type}, not stored")

    def value(self, index: int) -> np.ndarray:
        """The value an op consumes from tensor ``index`` as float32 (int32 stays int32), following
        ``DEQUANTIZE`` (fp16, or int8/uint8 with scales) and ``DENSIFY``."""
        op = self.producer.get(index)
        source = op.inputs[0] if op is not None and op.type == "DEQUANTIZE" else index
        return self._dequantize(self.native_value(source), self.tensors[source])

    @staticmethod
    def _dequantize(raw: np.ndarray, t: Tensor) -> np.ndarray:
        if t.dtype in (0, 1):
            return raw.astype(np.float32)
        if t.quant_scale is None:
            return raw
        shape = [1] * raw.ndim
        if t.quant_scale.size > 1:
            shape[t.quant_axis] = -1
        scale = t.quant_scale.reshape(shape)
        zero = t.quant_zero_point
        zero = zero.reshape(shape) if zero.size == t.quant_scale.size else zero[0]
        return ((raw.astype(np.int64) - zero) * scale).astype(np.float32)


def _int_vector(tflite: Any, union_type: int, table: Any) -> np.ndarray:
    classes = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}
    vec = classes[union_type]()
    vec.Init(table.Bytes, table.Pos)
    return vec.ValuesAsNumpy().astype(np.int64)


def _densify(values: np.ndarray, dense_shape: tuple[int, ...], sparsity: Any) -> np.ndarray:
    """Expand a TFLite sparse tensor (TACO-style dim metadata, optional block map) to dense."""
    tflite = _import_tflite()
    order = sparsity.TraversalOrderAsNumpy().astype(np.int64)
    block_map = sparsity.BlockMapAsNumpy().astype(np.int64) if sparsity.BlockMapLength() else np.zeros(0, np.int64)
    rank = len(dense_shape)
    levels = []
    for level in range(sparsity.DimMetadataLength()):
        dm = sparsity.DimMetadata(level)
        if dm.Format() == 0:
            levels.append(("dense", int(dm.DenseSize()), None, None))
        else:
            segments = _int_vector(tflite, dm.ArraySegmentsType(), dm.ArraySegments())
            indices = _int_vector(tflite, dm.ArrayIndicesType(), dm.ArrayIndices())
            levels.append(("sparse", 0, segments, indices))
    block_sizes = [levels[rank + i][1] for i in range(len(block_map))]
    # Enumerate every stored element's coordinate per traversal level, level by level (vectorized).
    coords = np.zeros((1, 0), dtype=np.int64)
    positions = np.zeros(1, dtype=np.int64)
    for kind, size, segments, indices in levels:
        if kind == "dense":
            coords = np.concatenate([np.repeat(coords, size, 0), np.tile(np.arange(size), len(coords))[:, None]], 1)
            positions = (positions[:, None] * size + np.arange(size)[None, :]).reshape(-1)
        else:
            counts = segments[positions + 1] - segments[positions]
            starts = np.repeat(segments[positions], counts)
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            positions = starts + offsets
            coords = np.concatenate([np.repeat(coords, counts, 0), indices[positions][:, None]], 1)
    if len(coords) != values.size:
        raise TFLiteFormatError(f"sparse tensor metadata describes {len(coords)} values, buffer holds {values.size}")
    dense_idx = np.zeros((len(coords), rank), dtype=np.int64)
    for level in range(rank):
        dense_idx[:, order[level]] = coords[:, level]
    for level in range(rank, len(levels)):
        block = order[level] - rank
        dim = block_map[block]
        dense_idx[:, dim] = dense_idx[:, dim] * block_sizes[block] + coords[:, level]
    out = np.zeros(dense_shape, dtype=values.dtype)
    out[tuple(dense_idx.T)] = values
    return out

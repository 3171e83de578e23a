"""Run exported BlazeFace files (ONNX, TFLite, TorchScript) behind :class:`~blazeface.FaceDetector`.

``load_backend(path)`` opens the file with its runtime and returns a callable
``backend(batch: Tensor[B, 3, S, S] in [-1, 1]) -> (regressors [B, A, 16], logits [B, A, 1])``
with the model name read from the file's metadata (or, for files without it such as MediaPipe's own
``.tflite`` files, recognised from the input size and anchor count).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..export.metadata import METADATA_KEY
from ..registry import get_config, list_models
from .backends import ort_session, run_in_parts

SUFFIXES = {".onnx": "onnx", ".tflite": "tflite", ".pt": "torchscript", ".ts": "torchscript",
            ".torchscript": "torchscript"}


class ModelFileError(ValueError):
    """An exported model file that cannot be opened (missing, truncated, wrong format)."""


def is_model_file(model: object) -> bool:
    """True if ``model`` names a model file (by suffix) rather than a registered model."""
    return isinstance(model, (str, Path)) and Path(str(model)).suffix.lower() in SUFFIXES


def _name_from_shapes(size: int, anchors: int, source: str) -> str:
    for name in list_models(pretrained=True):
        c = get_config(name)
        if c.input_size == size and c.net.num_anchors == anchors:
            return "full_range_sparse" if c.input_size == 192 else name  # MediaPipe's model_selection=1
    raise ModelFileError(f"{source}: a {size}×{size} input with {anchors} anchors is no known BlazeFace model")


class FileBackend:
    """Common part: metadata, model name, the call converting to and from torch (runs on the CPU)."""

    kind = ""
    device = torch.device("cpu")

    def __init__(self, path: Path, metadata: dict[str, Any] | None) -> None:
        self.path = path
        self.metadata = metadata or {}

    @property
    def name(self) -> str:
        return f"{self.kind} file"

    @property
    def model_name(self) -> str:
        return str(self.metadata["model"])

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reg, logits = self.run(batch.detach().float().cpu().numpy())
        return torch.from_numpy(np.ascontiguousarray(reg)).to(batch.device), \
            torch.from_numpy(np.ascontiguousarray(logits)).to(batch.device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, model={self.model_name!r})"


class OnnxBackend(FileBackend):
    kind = "onnx"

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:  # pragma: no cover
            raise ImportError("running .onnx files needs onnxruntime: pip install 'blazeface[onnx]'") from exc
        try:
            self.session = ort_session(path, num_threads)
        except Exception as exc:  # onnxruntime raises its own error types
            raise ModelFileError(f"{path} is not a readable ONNX model (truncated or wrong format): {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        metadata = json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else None
        super().__init__(path, metadata)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        outs = [o.name for o in self.session.get_outputs()]
        if "regressors" in outs and "logits" in outs:
            self.outputs = ["regressors", "logits"]
        else:
            shapes = {o.name: o.shape for o in self.session.get_outputs()}
            reg = [n for n, s in shapes.items() if s and s[-1] == 16]
            cls = [n for n, s in shapes.items() if s and s[-1] == 1]
            if len(reg) != 1 or len(cls) != 1:
                raise ModelFileError(f"{path}: outputs {shapes} are not BlazeFace regressors/logits")
            self.outputs = [reg[0], cls[0]]
        self.extra_feeds = {i.name for i in self.session.get_inputs()[1:]}
        if not self.metadata:
            size = int(inp.shape[-1])
            anchors = int(self.session.get_outputs()[outs.index(self.outputs[0])].shape[1])
            self.metadata = {"model": _name_from_shapes(size, anchors, str(path))}

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reg, logits = self.session.run(self.outputs, {self.input_name: batch.astype(np.float32)})
        return reg, logits


class TFLiteBackend(FileBackend):
    """A ``.tflite`` file in the LiteRT interpreter: NHWC or NCHW input, float or int8 I/O, outputs
    concatenated or split per head (finer grid first), run one image at a time (batch 1 graphs).

    One image runs with ``num_threads`` threads; a batch is shared between ``num_threads`` single-threaded
    interpreters working on different images at once (faster than threads sharing each layer of one image).
    """

    kind = "tflite"

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        self.threads = max(1, num_threads or 1)
        self._local = threading.local()
        self._pool: Any = None
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:  # pragma: no cover
            raise ImportError("running .tflite files needs ai-edge-litert: pip install 'blazeface[convert]'") from exc
        data = path.read_bytes()
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ModelFileError(f"{path} is not a TFLite flatbuffer (no 'TFL3' identifier)")
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads or 1)
            self.interpreter.allocate_tensors()
        except Exception as exc:
            raise ModelFileError(f"{path} is not a readable TFLite model (truncated or corrupt): {exc}") from exc
        super().__init__(path, _tflite_metadata(data))
        self.input = self.interpreter.get_input_details()[0]
        shape = [int(v) for v in self.input["shape"]]
        self.nhwc = shape[-1] == 3
        size = shape[1] if self.nhwc else shape[-1]
        outs = self.interpreter.get_output_details()
        # Pair regressors/logits per head by anchor count; heads in descending anchor-count order
        # is the finer grid first for every shipped model (512/384, 2304).
        self.regs = sorted((o for o in outs if o["shape"][-1] == 16), key=lambda o: -int(o["shape"][1]))
        self.cls = sorted((o for o in outs if o["shape"][-1] == 1), key=lambda o: -int(o["shape"][1]))
        if not self.regs or len(self.regs) != len(self.cls):
            raise ModelFileError(f"{path}: outputs {[list(o['shape']) for o in outs]} are not BlazeFace regressors/logits")
        if not self.metadata:
            self.metadata = {"model": _name_from_shapes(size, sum(int(o["shape"][1]) for o in self.regs), str(path))}

    @staticmethod
    def _dequant(detail: dict[str, Any], value: np.ndarray) -> np.ndarray:
        if value.dtype == np.float32:
            return value
        scale, zero = detail["quantization"]
        return (value.astype(np.float32) - zero) * scale

    @property
    def workers(self) -> int:
        """How many :meth:`run_single_threaded` calls can usefully run at once."""
        return self.threads

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.threads == 1 or len(batch) < 2:
            return self._run(self.interpreter, batch)
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="blazeface-litert")
        parts = np.array_split(np.arange(len(batch)), self.threads)
        return run_in_parts(self._pool, self.run_single_threaded, batch, parts)

    def run_single_threaded(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`run` on one core, with this thread's own single-threaded interpreter (interpreters are not
        thread-safe); safe to call from several threads at once."""
        interpreter = getattr(self._local, "interpreter", None)
        if interpreter is None:
            from ai_edge_litert.interpreter import Interpreter

            interpreter = Interpreter(model_path=str(self.path), num_threads=1)
            interpreter.allocate_tensors()
            self._local.interpreter = interpreter
        return self._run(interpreter, batch)

    def _run(self, it: Any, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        regs, logits = [], []
        for img in batch:
            x = img.transpose(1, 2, 0) if self.nhwc else img
            if self.input["dtype"] != np.float32:
                scale, zero = self.input["quantization"]
                info = np.iinfo(self.input["dtype"])
                x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self.input["dtype"])
            it.tensor(self.input["index"])()[0] = x  # one (transposing) copy straight into the input buffer
            it.invoke()
            regs.append(np.concatenate([self._dequant(o, it.get_tensor(o["index"]))[0] for o in self.regs], 0))
            logits.append(np.concatenate([self._dequant(o, it.get_tensor(o["index"]))[0] for o in self.cls], 0))
        return np.stack(regs), np.stack(logits)


def _tflite_metadata(data: bytes) -> dict[str, Any] | None:
    """Our JSON from the model's ``metadata`` entry named ``blazeface``, if the file has one."""
    try:
        from ..export.tflite_export import read_tflite_metadata
        return read_tflite_metadata(data)
    except Exception:  # no tflite reader, or no metadata: fall back to the shapes
        return None


@contextlib.contextmanager
def quantized_engine(name: str | None) -> Iterator[None]:
    """Run under PyTorch's quantized engine ``name`` (``torch.backends.quantized.engine``; ``None``: as it is),
    restoring the one before: int8 kernels such as oneDNN's fused ``conv2d_add_relu`` exist in one engine only."""
    if name is None or name == torch.backends.quantized.engine:
        yield
        return
    if name not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"this PyTorch build has no {name!r} quantized engine "
                           f"(it has {torch.backends.quantized.supported_engines})")
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


class TorchScriptBackend(FileBackend):
    kind = "torchscript"

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        # int8 files name the quantized engine their kernels need (files written before 2026-12-06: none). Loading
        # packs the int8 weights for the engine then current, so the metadata is read from the archive first and
        # the file loaded under its engine: oneDNN's fused kernels on weights packed for "x86" took 2.3x as long
        # (full range, 8.3 against 3.5 ms)
        metadata = self._read_metadata(path)
        self.engine: str | None = ((metadata or {}).get("quantization") or {}).get("engine")
        self.module = self._load(path, self.engine)
        super().__init__(path, metadata)
        if not self.metadata:
            raise ModelFileError(f"{path}: TorchScript file without blazeface metadata (not exported by blazeface)")

    @staticmethod
    def _read_metadata(path: Path) -> dict[str, Any] | None:
        """The metadata ``torch.jit.save`` stored in a TorchScript archive (a zip; ``<archive>/extra/<key>.json``),
        or None where the file has none or is not a zip (:meth:`_load` then reports the error)."""
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith(f"/extra/{METADATA_KEY}.json")), None)
                return json.loads(archive.read(name)) if name else None
        except (zipfile.BadZipFile, OSError, ValueError):
            return None

    @staticmethod
    def _load(path: Path, engine: str | None) -> Any:
        import warnings

        try:
            with warnings.catch_warnings(), quantized_engine(engine):  # torch.jit is deprecated, still works
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ModelFileError(f"{path} is not a readable TorchScript model (truncated or wrong format): {exc}") from exc
        return module.eval()

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode(), quantized_engine(self.engine):
            reg, logits = self.module(torch.from_numpy(batch))
        return reg.float().numpy(), logits.float().numpy()

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode(), quantized_engine(self.engine):
            reg, logits = self.module(batch.detach().float().cpu())
        return reg.float().to(batch.device), logits.float().to(batch.device)


_BACKENDS = {"onnx": OnnxBackend, "tflite": TFLiteBackend, "torchscript": TorchScriptBackend}


def load_backend(path: str | Path, num_threads: int | None = None) -> FileBackend:
    """Open an exported model file with the runtime its suffix names."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ModelFileError(f"{path}: unknown model file type (expected {', '.join(sorted(SUFFIXES))})")
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    return _BACKENDS[kind](path, num_threads)


__all__ = ["FileBackend", "ModelFileError", "OnnxBackend", "TFLiteBackend", "TorchScriptBackend", "is_model_file",
           "load_backend"]

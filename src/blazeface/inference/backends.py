"""Run the raw network — ``Tensor[B, 3, S, S]`` in ``[-1, 1]`` → ``(regressors [B, A, 16], logits [B, A, 1])`` —
with PyTorch or ONNX Runtime. Decoding and NMS stay outside, identical for every backend.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from torch import nn

from ..nn.blazenet import BlazeNet
from .nchwc import align_channels, nchwc_block_size

BackendName = Literal["auto", "torch", "onnxruntime"]


class Backend(Protocol):
    """The raw network on a device."""

    name: str
    device: torch.device

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class TorchBackend:
    """PyTorch eager: ``channels_last`` on the CPU, ``inference_mode``, optional fp16 on CUDA.

    On the CPU a batch larger than ``cpu_chunk`` runs in chunks of that many images: a batch of 64 in one
    call takes about 2x longer per image (the activations leave the cache)."""

    name = "torch"
    cpu_chunk = 16

    def __init__(self, net: BlazeNet, device: torch.device, half: bool = False) -> None:
        if half and device.type == "cpu":
            raise ValueError("half=True needs a CUDA device (fp16 convolutions are slow or missing on the CPU)")
        self.device = device
        self.half = half
        self.net = net.to(device).eval()
        if device.type == "cpu":
            self.net = self.net.to(memory_format=torch.channels_last)
        if half:
            self.net = self.net.half()

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.device.type == "cpu" and len(batch) > self.cpu_chunk:
            parts = [self(batch[i:i + self.cpu_chunk]) for i in range(0, len(batch), self.cpu_chunk)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        with torch.inference_mode():
            x = batch.to(self.device, non_blocking=True)
            if self.device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            if self.half:
                x = x.half()
            reg, logits = self.net(x)
            return reg.float(), logits.float()


def _cache_dir() -> Path:
    root = os.environ.get("BLAZEFACE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "blazeface")
    return Path(root) / "onnx"


def _state_digest(net: BlazeNet) -> str:
    h = hashlib.sha256(repr(net.spec).encode())
    for name, t in net.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def export_onnx(net: nn.Module, path: str | Path) -> Path:
    """Export the raw network (a :class:`BlazeNet` or its :class:`~blazeface.inference.nchwc.AlignedBlazeNet`) to ONNX
    with a dynamic batch (:func:`blazeface.export.onnx_export.export_raw_onnx`), written atomically so that
    concurrent processes never read a half-written file."""
    from ..export.onnx_export import export_raw_onnx, save_onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        save_onnx(export_raw_onnx(net.cpu().eval(), int(net.input_size)), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def run_in_parts(pool: Executor | None, run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                 batch: np.ndarray, parts: Iterable[slice | np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``run`` (a single-threaded network call) on each part of ``batch`` in ``pool`` (``None``: one after the
    other in this thread); the two outputs of the parts concatenated in order."""
    done = list((pool.map if pool is not None else map)(lambda part: run(batch[part]), parts))
    return np.concatenate([d[0] for d in done]), np.concatenate([d[1] for d in done])


def ort_session(path: str | Path, threads: int | None = None, spin: bool = False):  # noqa: ANN201 - optional dep
    """An ONNX Runtime CPU session for ``path`` with every graph optimization: ``threads`` intra-op threads (``None``:
    ONNX Runtime's default, one per core), spinning between parallel sections only when ``spin``; warnings muted
    (files exported with post-processing have overridable thresholds as inputs, which ONNX Runtime warns about)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin and threads != 1 else "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxRuntimeBackend:
    """ONNX Runtime on the CPU. The network is exported once and cached in ``$BLAZEFACE_CACHE``
    (default ``~/.cache/blazeface/onnx``), keyed by architecture, weights and channel block: as an
    :class:`~blazeface.inference.nchwc.AlignedBlazeNet`, the same function with channel counts that ONNX Runtime's
    blocked kernels run without reordering (short range: network 25% faster at 2 threads).

    One image (or up to ``chunk``) runs with ``threads`` intra-op threads, which spin between the layers'
    parallel sections (``spin=True``: waking a sleeping thread for each of ~70 small layers costs more than the
    layer). A larger batch is split into chunks of ``chunk`` images that run concurrently on a non-spinning
    single-threaded session (:meth:`run_single_threaded`, which :class:`~blazeface.FaceDetector` also calls from
    its own workers), or one after the other with ``threads=1``: for a network this small, cores working on
    different images beat cores sharing every layer of one, and large batches thrash the cache (at one thread a
    batch of 64 in one run takes 1.8-2x longer per image than chunks of 2).
    """

    name = "onnxruntime"

    def __init__(self, net: BlazeNet, threads: int | None = None, model_path: str | Path | None = None,
                 spin: bool = True, chunk: int = 2) -> None:
        self.device = torch.device("cpu")
        if model_path is None:
            block = nchwc_block_size()
            model_path = _cache_dir() / f"{type(net).__name__}-{_state_digest(net)}-nchwc{block}.onnx"
            if not Path(model_path).is_file():
                export_onnx(align_channels(net, block), model_path)
        self.model_path = Path(model_path)
        self.threads = max(1, threads or torch.get_num_threads())
        self.spin = spin
        self.chunk = max(1, chunk)
        self.session = self._session(self.threads, self.spin)
        self._input = self.session.get_inputs()[0].name
        outputs = self.session.get_outputs()
        self._order = [o.name for o in sorted(outputs, key=lambda o: -int(o.shape[-1] if isinstance(o.shape[-1], int) else 0))]
        # Shared by concurrent callers (InferenceSession.run is thread-safe); no threads of its own to spin.
        self._single = self.session if self.threads == 1 else self._session(1, False)
        self._pool: object | None = None

    @property
    def workers(self) -> int:
        """How many :meth:`run_single_threaded` calls can usefully run at once."""
        return self.threads

    def _session(self, threads: int, spin: bool):  # noqa: ANN202 - onnxruntime is optional
        return ort_session(self.model_path, threads, spin)

    def run_single_threaded(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``float32[B, 3, S, S]`` → ``(float32[B, A, 16], float32[B, A, 1])`` on one core; safe to call from
        several threads at once."""
        reg, logits = self._run(self._single, np.ascontiguousarray(batch, dtype=np.float32))
        return reg, logits

    def _run(self, session, x: np.ndarray) -> list[np.ndarray]:  # noqa: ANN001
        return session.run(self._order, {self._input: x})

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else batch
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) <= self.chunk:
            reg, logits = self._run(self.session, x)
        else:  # chunks: on worker threads, or one after the other at 1 thread (one large run thrashes the cache)
            if self._pool is None and self.threads > 1:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="blazeface-ort")
            reg, logits = run_in_parts(self._pool, self.run_single_threaded, x,  # type: ignore[arg-type]
                                       [slice(i, i + self.chunk) for i in range(0, len(x), self.chunk)])
        return torch.from_numpy(reg), torch.from_numpy(logits)


def available_backends() -> list[str]:
    """Backends that can run here."""
    names = ["torch"]
    if importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None:
        names.append("onnxruntime")
    return names


def make_backend(name: BackendName, net: BlazeNet, device: torch.device, half: bool = False,
                 threads: int | None = None) -> Backend:
    """Build a backend; ``"auto"`` picks ONNX Runtime on the CPU when it is installed (fastest there), else PyTorch."""
    if name == "auto":
        name = "onnxruntime" if device.type == "cpu" and not half and "onnxruntime" in available_backends() else "torch"
    if name == "torch":
        return TorchBackend(net, device, half)
    if name == "onnxruntime":
        if device.type != "cpu":
            raise ValueError("the onnxruntime backend runs on the CPU; use backend='torch' for CUDA")
        if "onnxruntime" not in available_backends():
            raise ImportError("backend='onnxruntime' needs onnx and onnxruntime: pip install 'blazeface[onnx]'")
        return OnnxRuntimeBackend(net, threads)
    raise ValueError(f"unknown backend {name!r}; expected 'auto', 'torch' or 'onnxruntime'")

"""Inference backends: the raw network behind one interface (PyTorch, ONNX Runtime)."""

from .backends import Backend, BackendName, OnnxRuntimeBackend, TorchBackend, available_backends, make_backend

__all__ = ["Backend", "BackendName", "OnnxRuntimeBackend", "TorchBackend", "available_backends", "make_backend"]

"""Inference backends: the raw network behind one interface — PyTorch, ONNX Runtime, or an exported file's runtime."""

from .backends import Backend, BackendName, OnnxRuntimeBackend, TorchBackend, available_backends, make_backend
from .files import FileBackend, ModelFileError, is_model_file, load_backend

__all__ = ["Backend", "BackendName", "OnnxRuntimeBackend", "TorchBackend", "available_backends", "make_backend",
           "FileBackend", "ModelFileError", "is_model_file", "load_backend"]

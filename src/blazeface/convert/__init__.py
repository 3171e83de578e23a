"""TFLite → PyTorch conversion (needs the ``convert`` extra: ``tflite``; parity checks: ``ai-edge-litert``)."""

from .converter import (
    ConversionError,
    ParityReport,
    compare_with_tflite,
    convert_file,
    convert_tflite,
    detect_model_name,
    save_weights,
    tflite_raw_outputs,
    tflite_state_dict,
)
from .tflite_graph import TFLiteFormatError, TFLiteGraph

__all__ = [
    "ConversionError", "ParityReport", "TFLiteFormatError", "TFLiteGraph", "compare_with_tflite",
    "convert_file", "convert_tflite", "detect_model_name", "save_weights", "tflite_raw_outputs", "tflite_state_dict",
]

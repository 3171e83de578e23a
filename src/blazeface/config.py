"""Frozen, declarative configuration of each model: the network, its anchors, decoding and thresholds."""

from __future__ import annotations

from dataclasses import dataclass

from .nn.blazenet import NetSpec


@dataclass(frozen=True)
class AnchorOptions:
    """MediaPipe's ``SsdAnchorsCalculatorOptions`` (the fields the face models use)."""

    input_size: int
    num_layers: int
    strides: tuple[int, ...]
    min_scale: float
    max_scale: float
    anchor_offset: float = 0.5
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0
    fixed_anchor_size: bool = True
    reduce_boxes_in_lowest_layer: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines one registered model.

    ``box_scale`` is MediaPipe's ``x_scale = y_scale = w_scale = h_scale``; ``min_score`` and
    ``min_suppression`` are the graph's ``min_score_thresh`` and weighted-NMS IoU threshold.
    ``weights`` names a ``.safetensors`` file inside the package (``None``: not shipped), produced
    by :func:`blazeface.convert.convert_tflite` from ``source_file`` (sha256 ``source_sha256``).
    ``int8_float_tail``: ONNX int8 keeps this many nodes upstream of the heads' inputs in float (see
    :func:`blazeface.export.quantize.head_feeding_nodes`); ``int8_qat_steps``: the steps of quantization-aware
    fine-tuning its ONNX int8 export runs by default (:func:`blazeface.export.qat.qat_finetune_onnx`);
    ``int8_torch_qat_steps``: the same for its TorchScript int8 export, under PyTorch's own rounding
    (:func:`blazeface.export.qat.qat_finetune_fx`), one run per seed of ``int8_torch_qat_seeds``, their weights
    averaged; ``int8_tflite_float_tail``: TFLite int8 keeps this many arithmetic ops upstream of the heads in float
    (:func:`blazeface.export.tflite_int8.float_tail_ops`); ``int8_calibration_mosaics``,
    ``int8_torch_calibration_mosaics``, ``int8_tflite_calibration_mosaics``: the mosaics of the calibration photos
    that replace most of the ONNX, TorchScript and TFLite int8 calibration images
    (:func:`blazeface.export.quantize.calibration_images`).
    """

    name: str
    description: str
    net: NetSpec
    anchors: AnchorOptions
    box_scale: float
    min_score: float
    min_suppression: float = 0.3
    score_clip: float = 100.0
    weights: str | None = None
    weights_sha256: str | None = None
    source_file: str | None = None
    source_sha256: str | None = None
    license: str = "Apache-2.0"
    int8_float_tail: int = 0
    int8_qat_steps: int = 0
    int8_torch_qat_steps: int = 0
    int8_torch_qat_seeds: tuple[int, ...] = (0,)
    int8_tflite_float_tail: int = 0
    int8_torch_float_modules: tuple[str, ...] = ()
    int8_calibration_mosaics: int = 0
    int8_torch_calibration_mosaics: int = 0
    int8_tflite_calibration_mosaics: int = 0

    @property
    def input_size(self) -> int:
        return self.net.input_size

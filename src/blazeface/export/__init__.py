"""Export BlazeFace networks to ONNX, TorchScript and TFLite, float or int8, with metadata.

>>> from blazeface.export import export_model
>>> export_model("short_range", "onnx", "short_range.onnx", with_postprocess=True)
>>> export_model("short_range", "onnx", "short_range_int8.onnx", int8=True)   # calibrated on examples/

Runtimes are optional extras: ``onnx`` (onnx, onnxscript, onnxruntime), ``tflite-export`` (litert-torch).
Exported files run through :class:`blazeface.FaceDetector` (``FaceDetector("short_range.onnx")``).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from ..registry import create_model, get_config, list_models
from .metadata import METADATA_KEY, build_metadata

FORMATS = ("onnx", "torchscript", "tflite")
# ONNX int8 quantizes the channel-aligned graph (blazeface.inference.nchwc): the same function with every channel
# count a multiple of this, no channel Pad, and ORT's symmetric u8s8 depthwise kernels (which need 16)
INT8_CHANNEL_BLOCK = 16
# ... and the RGB input gets a zero 4th channel in the graph (ORT's symmetric int8 kernels need inputs in 4s)
INT8_STEM_INPUT_CHANNELS = 4
_SUFFIX_FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".pt": "torchscript", ".ts": "torchscript"}


def default_qat_steps(model: str, fmt: str | None, int8: bool) -> int:
    """Steps of quantization-aware fine-tuning an export runs unless told: the model's ``int8_qat_steps`` for ONNX
    int8, its ``int8_torch_qat_steps`` for TorchScript int8, else 0."""
    if not int8:
        return 0
    config = get_config(model)
    return {"onnx": config.int8_qat_steps, "torchscript": config.int8_torch_qat_steps}.get(fmt or "", 0)


def default_calibration_mosaics(model: str, fmt: str | None) -> int:
    """Mosaics of the calibration photos an int8 export calibrates on unless told
    (:func:`~blazeface.export.quantize.calibration_images`): the model's ``int8_calibration_mosaics`` (ONNX),
    ``int8_torch_calibration_mosaics`` (TorchScript) or ``int8_tflite_calibration_mosaics`` (TFLite)."""
    config = get_config(model)
    return {"onnx": config.int8_calibration_mosaics, "torchscript": config.int8_torch_calibration_mosaics,
            "tflite": config.int8_tflite_calibration_mosaics}.get(fmt or "", 0)


def export_model(model: str, fmt: str | None, output: str | Path, *, int8: bool = False,
                 calibration: str | Path | None = None, with_postprocess: bool = False, split_heads: bool = False,
                 weights: str | Path | None = None, max_detections: int = 100, nms: str = "weighted",
                 augment: bool = True, onnx_int8: dict[str, Any] | None = None,
                 torch_int8: dict[str, Any] | None = None, qat_steps: int | None = None, tflite_float_tail: int | None = None,
                 calibration_mosaics: int | None = None) -> Path:
    """Export registered ``model`` as ``fmt`` (``None``: from ``output``'s suffix) to ``output``.

    Args:
        int8: post-training static int8 (per-channel weights), calibrated on ``calibration`` (a folder of
            photos; ``None``: the bundled ``examples/`` with augmentations).
        with_postprocess: ONNX only: decoding + weighted NMS in the graph (extra outputs ``boxes``,
            ``keypoints``, ``scores``, ``batch_index``).
        split_heads: TFLite only: per-head outputs (the vendor layout) instead of concatenated ones.
        weights: a ``.safetensors`` file instead of the shipped weights (needed for ``front_2019``).
        onnx_int8: keyword arguments for :func:`~blazeface.export.quantize.quantize_onnx` (ONNX int8 only), e.g.
            ``{"weight_type": "uint8", "quant_format": "qoperator"}``, and ``channel_block``: the graph quantized
            has its channels zero-padded to multiples of this (default :data:`INT8_CHANNEL_BLOCK`; ``None``: the
            network as trained, with its channel ``Pad`` nodes, run in 8 bits), and ``stem_input_channels``
            (default :data:`INT8_STEM_INPUT_CHANNELS`: the RGB input plus a zero channel, in the graph).
        torch_int8: keyword arguments for :func:`~blazeface.export.quantize.quantize_torch_fx` (TorchScript int8
            only), e.g. ``{"reduce_range": True}`` (7-bit activations; default: what
            :func:`~blazeface.export.quantize.int8_activation_reduce_range` picks for this CPU) or
            ``{"qat_seeds": (1,)}`` (the fine-tuning's batch sampling, one run per seed, weights averaged; default:
            the model's ``int8_torch_qat_seeds``).
        qat_steps: int8 only: before quantizing, fine-tune the network this many steps under int8 rounding,
            distilled from its float self on the calibration images: ONNX Runtime's for ONNX and TFLite
            (:func:`~blazeface.export.qat.qat_finetune_onnx`; about 0.5 s a step on 2 CPU cores for short range),
            PyTorch's own for TorchScript (:func:`~blazeface.export.qat.qat_finetune_fx`; about 0.3 s a step).
            ``None``: :func:`default_qat_steps`.
        tflite_float_tail: TFLite int8 only: the arithmetic ops upstream of the heads that stay float
            (:func:`~blazeface.export.tflite_int8.float_tail_ops`); ``None``: the model's ``int8_tflite_float_tail``.
        calibration_mosaics: int8 only: mosaics of the calibration photos (grids of 2×2 to 6×6 crops, so their
            faces also come at crowd scales) that take the place of most calibration images; ``None``:
            :func:`default_calibration_mosaics`.
    """
    output = Path(output)
    fmt = fmt or _SUFFIX_FORMATS.get(output.suffix.lower())
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} for {output}; expected one of {', '.join(FORMATS)}")
    if with_postprocess and fmt != "onnx":
        raise ValueError("--with-postprocess is implemented for ONNX only")
    if onnx_int8 is not None and not (int8 and fmt == "onnx"):
        raise ValueError("onnx_int8 options need int8=True and the ONNX format")
    if torch_int8 is not None and not (int8 and fmt == "torchscript"):
        raise ValueError("torch_int8 options need int8=True and the TorchScript format")
    if qat_steps and not int8:
        raise ValueError("qat_steps (quantization-aware fine-tuning) needs int8=True")
    if qat_steps is not None and qat_steps < 0:
        raise ValueError(f"qat_steps must be >= 0, got {qat_steps}")
    if tflite_float_tail is not None and not (int8 and fmt == "tflite"):
        raise ValueError("tflite_float_tail needs int8=True and the TFLite format")
    if tflite_float_tail is not None and tflite_float_tail < 0:
        raise ValueError(f"tflite_float_tail must be >= 0, got {tflite_float_tail}")
    if calibration_mosaics and not int8:
        raise ValueError("calibration_mosaics (int8 calibration images) needs int8=True")
    if calibration_mosaics is not None and calibration_mosaics < 0:
        raise ValueError(f"calibration_mosaics must be >= 0, got {calibration_mosaics}")
    if split_heads and fmt != "tflite":
        raise ValueError("--split-heads is implemented for TFLite only")
    config = get_config(model)
    if qat_steps is None:
        qat_steps = default_qat_steps(config.name, fmt, int8)
    if config.weights is None and weights is None:
        raise ValueError(f"model {config.name!r} ships no weights; pass weights=PATH")
    tail = config.int8_tflite_float_tail if tflite_float_tail is None else tflite_float_tail
    if int8 and fmt == "tflite" and config.int8_tflite_float_tail and not tail:
        import warnings

        warnings.warn(f"int8 TFLite without a float tail rounds every layer of {config.name}, which needs its last "
                      "layers in float: on wider_val_dev this file finds faces float does not (benchmarks/RESULTS.md); "
                      "keep a float tail (--tflite-float-tail N) or prefer --format onnx --int8", UserWarning, stacklevel=2)
    net = create_model(config.name, pretrained=weights is None, weights=weights).eval()
    size = config.input_size
    images = None
    quant: dict[str, Any] | None = None
    if int8:
        from .quantize import calibration_images, prepare_for_int8

        mosaics = default_calibration_mosaics(config.name, fmt) if calibration_mosaics is None else calibration_mosaics
        images = calibration_images(calibration, size, augment=augment, mosaics=mosaics)
        net = prepare_for_int8(net, images)
        quant = {"int8": True, "weights": "per-channel int8", "calibration": str(calibration or "examples/ (augmented)"),
                 "calibration_images": len(images), "equalized": True}
        if mosaics:
            quant["calibration_mosaics"] = mosaics
        if qat_steps:
            quant["qat_steps"] = qat_steps
        if qat_steps and fmt != "torchscript":  # torchscript: under PyTorch's own rounding, in quantize_torch_fx
            from .qat import qat_finetune_onnx

            net = qat_finetune_onnx(net, images, steps=qat_steps, float_tail=config.int8_float_tail)
    output.parent.mkdir(parents=True, exist_ok=True)

    if fmt == "onnx":
        from .onnx_export import add_postprocess, export_raw_onnx, save_onnx, set_metadata

        if int8:
            import onnx

            from ..inference.nchwc import align_channels
            from .quantize import quantize_onnx

            assert images is not None and quant is not None
            opts = dict(onnx_int8 or {})
            # ONNX Runtime's fast symmetric int8 depthwise kernel needs channel counts that are multiples of 16
            block = opts.pop("channel_block", INT8_CHANNEL_BLOCK)
            stem_inputs = opts.pop("stem_input_channels", INT8_STEM_INPUT_CHANNELS)
            opts.setdefault("float_tail", config.int8_float_tail)
            with tempfile.TemporaryDirectory() as tmp:
                graph = align_channels(net, block, stem_inputs) if block else net
                fp = save_onnx(export_raw_onnx(graph, size), Path(tmp) / "float.onnx")
                quantize_onnx(fp, Path(tmp) / "int8.onnx", images, **opts)
                model_proto = onnx.load(str(Path(tmp) / "int8.onnx"))
            signed = opts.get("weight_type", "int8") != "uint8"
            quant.update({"runtime": f"onnxruntime {'QOperator' if opts.get('quant_format') == 'qoperator' else 'QDQ'}",
                          "activations": "uint8 per tensor (99.99th percentile ranges)",
                          "weights": ("int8 per output channel (symmetric" + (", 7 bits)" if opts.get("reduce_range", True) else ")")
                                      if signed else "uint8 per output channel (asymmetric)"),
                          "head_convs": "float compute; regressor weights int8, classifier weights float16",
                          # 1x1 heads reading the 8-bit body, rewritten as channels-last MatMul (quantize.heads_as_matmul)
                          "matmul_heads": sum(n.op_type == "MatMul" for n in model_proto.graph.node),
                          "graph": f"channels zero-padded to multiples of {block}" if block else "as trained",
                          "float_tail": opts["float_tail"]})
        else:
            model_proto = export_raw_onnx(net, size)
        post = None
        if with_postprocess:
            add_postprocess(model_proto, config, max_detections, nms)
            post = {"nms": nms, "max_detections": max_detections, "outputs": ["boxes", "keypoints", "scores", "batch_index"],
                    "boxes": "x1, y1, x2, y2 normalized to the network input (undo the letterbox on the host)",
                    "inputs": {"min_score": config.min_score, "min_suppression": config.min_suppression}}
        set_metadata(model_proto, build_metadata(config, quantization=quant, postprocess=post))
        return save_onnx(model_proto, output)

    if fmt == "torchscript":
        import json

        from ..inference.files import quantized_engine

        if int8:
            from .quantize import TORCH_INT8_ENGINE, int8_activation_reduce_range, quantize_torch_fx

            assert images is not None and quant is not None
            opts = {"reduce_range": int8_activation_reduce_range(), "float_modules": config.int8_torch_float_modules,
                    "qat_seeds": config.int8_torch_qat_seeds, **(torch_int8 or {})}
            net = quantize_torch_fx(create_model(config.name, pretrained=weights is None, weights=weights), images,
                                    qat_steps=qat_steps, **opts)
            quant.update({"runtime": f"PyTorch FX int8 ({TORCH_INT8_ENGINE})", "engine": TORCH_INT8_ENGINE,
                          "head_convs": "float", "float_modules": list(opts["float_modules"]),
                          "activations": f"uint8 per tensor, {7 if opts['reduce_range'] else 8} bits (histogram observer)",
                          "float_ops": "zero pads, 2x2 max pools"})
            if qat_steps:
                quant["qat_seeds"] = [int(s) for s in opts["qat_seeds"]]
        else:
            net = ChannelsLast(net)
        meta = build_metadata(config, quantization=quant)
        example = torch.zeros(1, 3, size, size)
        with torch.no_grad(), _no_warnings(), quantized_engine(quant.get("engine") if quant else None):
            traced = torch.jit.freeze(torch.jit.trace(net.eval(), example, check_trace=False))
        with _no_warnings():
            torch.jit.save(traced, str(output), _extra_files={f"{METADATA_KEY}.json": json.dumps(meta, sort_keys=True)})
        return output

    from .tflite_export import export_tflite

    if int8:
        assert quant is not None
        quant.update({"runtime": "LiteRT full-integer (XNNPACK QS8)", "activations": "int8 per tensor (99.95th percentile per image)",
                      "weights": "int8 per output channel (symmetric)",
                      "head_convs": "float compute; regressor weights int8, classifier weights float32",
                      "io": "float32", "float_tail": tail})
    outputs = ["regressors", "logits"]
    if split_heads:
        outputs = [f"{kind}_{i}" for i in range(len(config.net.heads)) for kind in ("regressors", "logits")]
    meta = build_metadata(config, layout="NHWC", quantization=quant, outputs=outputs)
    return export_tflite(net, size, output, meta, split_heads=split_heads, int8_images=images, float_tail=tail)


class ChannelsLast(nn.Module):
    """``net`` on channels-last weights and inputs (NCHW in and out): PyTorch's fast CPU float layout, the one
    ``FaceDetector``'s eager backend runs (TorchScript float: 6.7 against 11 ms for full range, 1 thread)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = copy.deepcopy(net).to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x.contiguous(memory_format=torch.channels_last))


class _no_warnings:
    def __enter__(self) -> None:
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)


def run_export(args: argparse.Namespace, stdout: TextIO) -> int:
    try:
        fmt = args.format or _SUFFIX_FORMATS.get(Path(args.output).suffix.lower())
        if args.qat_steps is None and (steps := default_qat_steps(args.model, fmt, args.int8)):
            runs = len(get_config(args.model).int8_torch_qat_seeds) if fmt == "torchscript" else 1
            each = f", {runs} runs with their weights averaged" if runs > 1 else ""
            print(f"blazeface export: {steps} steps of quantization-aware fine-tuning first{each} (--qat-steps 0 skips "
                  f"them; measured times in benchmarks/RESULTS.md)", file=sys.stderr)
        out = export_model(args.model, args.format, args.output, int8=args.int8, calibration=args.calibration,
                           with_postprocess=args.with_postprocess, split_heads=args.split_heads,
                           weights=args.weights, max_detections=args.max_detections, nms=args.nms,
                           qat_steps=args.qat_steps, tflite_float_tail=args.tflite_float_tail,
                           calibration_mosaics=args.calibration_mosaics)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"blazeface export: {exc}", file=sys.stderr)
        return 1
    kind = "int8" if args.int8 else "float"
    print(f"{args.model} -> {out} ({args.format or out.suffix.lstrip('.')}, {kind}, {out.stat().st_size} bytes)", file=stdout)
    return 0


def add_export_parser(sub: Any) -> None:
    """Add ``blazeface export`` to the CLI's subparsers."""
    e = sub.add_parser("export", help="export a model to ONNX, TorchScript or TFLite (float or int8)")
    e.add_argument("model", choices=list_models() + ["front", "full"], help="registered model name")
    e.add_argument("-o", "--output", required=True, help="file to write (.onnx, .pt, .tflite)")
    e.add_argument("--format", choices=FORMATS, help="default: from the output suffix")
    e.add_argument("--int8", action="store_true", help="post-training static int8, per-channel weights")
    e.add_argument("--calibration", metavar="DIR", help="folder of photos to calibrate int8 (default: examples/)")
    e.add_argument("--qat-steps", type=int, default=None, metavar="N",
                   help="int8: first fine-tune N steps under the runtime's int8 rounding, distilled from float "
                        "(short range on 2 cores: about 0.5 s a step for ONNX, 0.3 s for TorchScript); default: the "
                        "model's int8_qat_steps for ONNX (0 for every shipped model), int8_torch_qat_steps for "
                        "TorchScript (short range: "
                        f"{get_config('short_range').int8_torch_qat_steps}; full range: "
                        f"{get_config('full_range').int8_torch_qat_steps} in each of "
                        f"{len(get_config('full_range').int8_torch_qat_seeds)} runs, weights averaged), else 0")
    e.add_argument("--tflite-float-tail", type=int, default=None, metavar="N",
                   help="TFLite int8: the last N arithmetic layers before the heads stay float; default: the "
                        "model's own (back: " f"{get_config('back').int8_tflite_float_tail}, full range sparse: "
                        f"{get_config('full_range_sparse').int8_tflite_float_tail}), else 0")
    e.add_argument("--calibration-mosaics", type=int, default=None, metavar="N",
                   help="int8: N mosaics of the calibration photos (grids of 2x2 to 6x6 crops: faces at crowd scales "
                        "too) take the place of most calibration images; default: the model's own (back and full range "
                        f"TorchScript: {get_config('back').int8_torch_calibration_mosaics}, short range and full range "
                        f"TFLite: {get_config('short_range').int8_tflite_calibration_mosaics}), else 0")
    e.add_argument("--with-postprocess", action="store_true",
                   help="ONNX: decoding and weighted NMS inside the graph (outputs boxes, keypoints, scores)")
    e.add_argument("--nms", choices=("weighted", "hard"), default="weighted", help="NMS inside the graph")
    e.add_argument("--max-detections", type=int, default=100, help="per image, with --with-postprocess")
    e.add_argument("--split-heads", action="store_true",
                   help="TFLite: per-head outputs (1,512,16), (1,512,1), (1,384,16), (1,384,1) for short range")
    e.add_argument("--weights", help="a .safetensors file instead of the shipped weights")
    e.set_defaults(func=run_export)


__all__ = ["FORMATS", "export_model", "default_calibration_mosaics", "add_export_parser", "run_export", "build_metadata"]

"""Command line: ``blazeface detect | convert | export | models | video | eval | train``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from .eval.cli import add_eval_parser
from .export import add_export_parser
from .io import ImageLoadError, iter_image_files, read_image
from .registry import get_config, list_models
from .video.cli import add_detect_options, add_video_parser, detect_extras


def _inputs(paths: Sequence[str]) -> Iterator[tuple[str, str | None]]:
    """``(path, error)`` for every file named or found in a folder (recursively), in order."""
    for raw in paths:
        try:
            for p in iter_image_files([raw]):
                yield str(p), None
        except ImageLoadError as exc:
            yield raw, str(exc)


def _record(path: str, model: str, width: int | None = None, height: int | None = None,
            faces: list[dict[str, Any]] | None = None, error: str | None = None) -> dict[str, Any]:
    return {"path": path, "width": width, "height": height, "model": model, "faces": faces or [], "error": error}


def _annotation_path(out_dir: Path, path: str, taken: set[str]) -> Path:
    stem = Path(path).stem or "image"
    name = f"{stem}.jpg"
    i = 1
    while name in taken:
        name = f"{stem}_{i}.jpg"
        i += 1
    taken.add(name)
    return out_dir / name


def _model_arg(value: str) -> str:
    from .inference import is_model_file

    if is_model_file(value) or value in list_models() + ["front", "full"]:
        return value
    raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {', '.join(list_models())}, or a model file)")


def run_detect(args: argparse.Namespace, stdout: TextIO) -> int:
    if getattr(args, "engine", "local") == "ray":  # scale-out: blazeface.distributed (extra [ray])
        from .distributed.cli import run as run_ray

        return run_ray(args, stdout)
    from tqdm import tqdm

    from .detector import FaceDetector

    try:
        detector = FaceDetector(args.model, device=args.device, min_score=args.min_score, weights=args.weights,
                                batch_size=args.batch_size, backend=args.backend, tiling=args.tile)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"blazeface detect: {exc}", file=sys.stderr)
        return 2
    inputs = list(_inputs(args.paths))
    if not inputs:
        print("blazeface detect: no inputs", file=sys.stderr)
        return 2
    if args.jsonl:
        Path(args.jsonl).parent.mkdir(parents=True, exist_ok=True)
    out: TextIO = open(args.jsonl, "w", encoding="utf-8") if args.jsonl else stdout
    annotate = Path(args.annotate) if args.annotate else None
    if annotate:
        annotate.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    failures = 0
    bar = tqdm(total=len(inputs), unit="img", desc=f"detect ({detector.model_name})", file=sys.stderr,
               disable=args.quiet or None)
    listing_errors = {path: error for path, error in inputs if error is not None}
    needs_image = bool(getattr(args, "pose", False) or getattr(args, "crops", None))
    try:
        stream = detector.stream([p for p, e in inputs if e is None], workers=args.workers)
        results = iter(stream)
        for path, error in inputs:
            if error is None:
                path, result = next(results)
                if isinstance(result, ImageLoadError):
                    error = str(result)
            else:
                error = listing_errors[path]
            if error is not None:
                record = _record(path, detector.model_name, error=error)
            else:
                if needs_image:  # pose and crops need the pixels again (the stream does not keep them)
                    detect_extras(args, detector, result, read_image(path), path)
                d = result.to_dict()
                record = _record(path, detector.model_name, d["width"], d["height"], d["faces"])
                if annotate:
                    result.plot(path).save(_annotation_path(annotate, path, taken), quality=92)
            failures += record["error"] is not None
            out.write(json.dumps(record) + "\n")
            bar.update(1)
        out.flush()
    finally:
        bar.close()
        if out is not stdout:
            out.close()
    if failures:
        print(f"blazeface detect: {failures} of {len(inputs)} inputs failed", file=sys.stderr)
    return 1 if failures == len(inputs) else 0


def run_convert(args: argparse.Namespace, stdout: TextIO) -> int:
    from .convert import ConversionError, TFLiteFormatError, convert_file

    try:
        name, out = convert_file(args.source, args.output, args.model)
    except (ConversionError, TFLiteFormatError, FileNotFoundError) as exc:
        print(f"blazeface convert: {exc}", file=sys.stderr)
        return 1
    print(f"{args.source} -> {out} (model {name})", file=stdout)
    if args.check:
        import numpy as np

        from .convert import compare_with_tflite
        from .registry import create_model

        model = create_model(name, weights=out)
        rng = np.random.default_rng(0)
        images = rng.uniform(-1, 1, (2, model.input_size, model.input_size, 3)).astype(np.float32)
        report = compare_with_tflite(model, args.source, images)
        print(f"parity with TFLite: max score diff {report.max_score_diff:.2e}, "
              f"max regressor diff {report.max_regressor_diff:.2e}", file=stdout)
        return 0 if report.ok() else 1
    return 0


def run_models(args: argparse.Namespace, stdout: TextIO) -> int:
    for name in list_models():
        c = get_config(name)
        shipped = "shipped" if c.weights else "no weights"
        print(f"{name:18s} {c.input_size:4d}px  min_score {c.min_score:.2f}  {shipped:10s}  {c.description}", file=stdout)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blazeface", description="BlazeFace face detection (MediaPipe models in PyTorch)")
    parser.add_argument("--version", action="version", version=f"blazeface {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("detect", help="detect faces in images and folders; one JSON line per input")
    d.add_argument("paths", nargs="+", help="image files and folders (searched recursively)")
    d.add_argument("--model", default="short_range", type=_model_arg,
                   help="registered model, or an exported .onnx / .tflite / .pt file (default: short_range)")
    d.add_argument("--weights", help="a .safetensors file to use instead of the shipped weights")
    d.add_argument("--jsonl", help="write the JSON lines here instead of stdout")
    d.add_argument("--annotate", metavar="DIR", help="write each image with boxes and keypoints drawn into DIR")
    d.add_argument("--min-score", type=float, help="score threshold (default: the model's own)")
    d.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    d.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    d.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime"],
                   help="inference backend (default: auto = ONNX Runtime on the CPU when installed)")
    d.add_argument("--workers", type=int, default=None, help="image decoding threads (default: up to 4)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    add_detect_options(d)
    d.add_argument("--tile", nargs="?", const="auto", choices=["auto", "off"], default="off",
                   help="multi-scale tiled inference for small faces in large images (default: off)")
    from .distributed.cli import add_arguments as add_ray_arguments

    add_ray_arguments(d)
    d.set_defaults(func=run_detect)

    c = sub.add_parser("convert", help="convert a MediaPipe .tflite face detector to .safetensors")
    c.add_argument("source", help="the .tflite file")
    c.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    c.add_argument("--model", help="architecture name (default: detected from the graph)")
    c.add_argument("--check", action="store_true", help="compare outputs with the TFLite interpreter (needs ai-edge-litert)")
    c.set_defaults(func=run_convert)

    add_export_parser(sub)

    m = sub.add_parser("models", help="list the registered models")
    m.set_defaults(func=run_models)
    add_video_parser(sub)
    add_eval_parser(sub)
    from .train.trainer import add_train_parser

    add_train_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "min_score", None) is not None and not 0 <= args.min_score <= 1:
        parser.error("--min-score must be in [0, 1]")
    if getattr(args, "batch_size", 1) < 1:
        parser.error("--batch-size must be at least 1")
    if args.command == "detect":
        from .distributed.cli import check_local_args

        check_local_args(args, parser)
    return int(args.func(args, stdout or sys.stdout))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

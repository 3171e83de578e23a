"""``blazeface detect --engine ray``: the options of the Ray engine, and the hand-off from the CLI.

Importing this module does not import Ray (the parser is built on every ``blazeface`` call).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The Ray engine's options on the ``detect`` parser."""
    g = parser.add_argument_group("scale-out with Ray Data (--engine ray; pip install 'blazeface[ray]')")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process (default); ray: a Ray Data actor pool writing Parquet to --output")
    g.add_argument("--output", metavar="OUT_DIR", help="folder or URI for the Parquet results (--engine ray); "
                   "inputs already there are skipped, so a rerun resumes")
    g.add_argument("--address", help="Ray cluster address (auto, HOST:PORT, ray://HOST:10001); default: a local instance")
    g.add_argument("--actors", type=int, help="detector actors (default: one per GPU, else one per CPU)")
    g.add_argument("--gpus-per-actor", type=float, help="GPUs per actor (default: 1 when the cluster has GPUs)")
    g.add_argument("--cpus-per-actor", type=float, help="CPUs per actor: its decoding and inference threads "
                   "(default: 1 on CPUs, 4 with a GPU)")
    g.add_argument("--rows-per-file", type=int, help="inputs per actor call and Parquet part file (default: 256)")
    g.add_argument("--blur", metavar="DIR", help="write anonymized copies (faces pixelated) into DIR")
    g.add_argument("--blur-mode", choices=["pixelate", "gaussian"], default="pixelate", help="how --blur hides faces")
    # --crops DIR / --crop-size (aligned face crops) are the detect options both engines share (video.cli).
    g.add_argument("--path-column", default="path", help="manifest column with the image paths (default: path)")
    g.add_argument("--bytes-column", help="manifest column with encoded image bytes (default: bytes/image if binary)")


def run(args: argparse.Namespace, stdout: TextIO) -> int:
    """Run ``detect`` on Ray; prints a JSON summary line. Exit status 1 when every input of this run failed."""
    if not args.output:
        print("blazeface detect: --engine ray needs --output OUT_DIR", file=sys.stderr)
        return 2
    if args.jsonl or args.annotate:
        print("blazeface detect: --jsonl and --annotate are for --engine local (Ray writes Parquet to --output)",
              file=sys.stderr)
        return 2
    try:
        from .pipeline import DEFAULT_ROWS_PER_FILE, detect_images
    except ImportError as exc:  # pragma: no cover - depends on the environment
        print(f"blazeface detect: --engine ray needs Ray Data: pip install 'blazeface[ray]' ({exc})", file=sys.stderr)
        return 2
    try:
        summary = detect_images(
            args.paths, args.output, model=args.model, weights=args.weights, min_score=args.min_score,
            backend=args.backend, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
            gpus_per_actor=args.gpus_per_actor, batch_size=args.batch_size if args.batch_size != 32 else None,
            rows_per_file=args.rows_per_file or DEFAULT_ROWS_PER_FILE, decode_threads=args.workers,
            blur=args.blur, blur_mode=args.blur_mode, crops=args.crops, crop_size=args.crop_size,
            path_column=args.path_column, bytes_column=args.bytes_column, address=args.address,
            device=args.device, progress=not args.quiet)
    except ValueError as exc:
        print(f"blazeface detect: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary.as_dict()), file=stdout)
    if summary.errors:
        print(f"blazeface detect: {summary.errors} of {summary.processed} inputs failed", file=sys.stderr)
    return 1 if summary.processed and summary.errors == summary.processed else 0


def check_local_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Options that only the Ray engine understands are usage errors with ``--engine local``."""
    if getattr(args, "engine", "local") != "local":
        return
    for opt in ("output", "address", "actors", "gpus_per_actor", "cpus_per_actor", "rows_per_file", "blur"):
        if getattr(args, opt, None) is not None:
            parser.error(f"--{opt.replace('_', '-')} needs --engine ray")

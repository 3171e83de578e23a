"""``blazeface video`` and the ``--pose`` / ``--crops`` options of ``blazeface detect``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from ..registry import list_models


def add_video_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``blazeface video`` on the CLI's subparsers."""
    v = sub.add_parser("video", help="track faces in a video, webcam, stream or image sequence; one JSON line per frame")
    v.add_argument("input", nargs="?", help="video file, image folder, glob pattern, or stream URL")
    v.add_argument("--source", help="a webcam index (0, 1, ...) or anything INPUT accepts")
    v.add_argument("--out", metavar="ANNOTATED.mp4", help="write the video with tracks drawn")
    v.add_argument("--jsonl", help="write the JSON lines here instead of stdout")
    v.add_argument("--smooth", default="kalman", choices=["kalman", "one-euro", "none"],
                   help="smoothing of boxes and keypoints per track (default: kalman)")
    v.add_argument("--pose", action="store_true", help="add each face's head pose (yaw, pitch, roll, ...)")
    v.add_argument("--crops", metavar="DIR", help="write aligned face crops (eyes level) into DIR")
    v.add_argument("--crop-size", type=int, default=112, help="side of the aligned crops (default: 112)")
    v.add_argument("--model", default="short_range", choices=list_models() + ["front", "full"],
                   help="model (default: short_range)")
    v.add_argument("--weights", help="a .safetensors file to use instead of the shipped weights")
    v.add_argument("--min-score", type=float, help="score threshold (default: the model's own)")
    v.add_argument("--max-missed", type=int, default=15, help="frames a track survives without detection (default: 15)")
    v.add_argument("--fps", type=float, help="frame rate for image sequences (default: 30)")
    v.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    v.add_argument("--batch-size", type=int, default=8,
                   help="frames per forward pass with --no-roi-tracking (default: 8)")
    v.add_argument("--no-roi-tracking", dest="roi_tracking", action="store_false",
                   help="detect whole frames only, in batches (faster; more keypoint jitter)")
    v.add_argument("--max-frames", type=int, help="stop after this many frames")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=run_video)
    return v


def add_detect_options(parser: argparse.ArgumentParser) -> None:
    """``--pose`` and ``--crops`` for ``blazeface detect``."""
    parser.add_argument("--pose", action="store_true",
                        help='add "pose": {yaw, pitch, roll, rotation, translation, ...} to each face')
    parser.add_argument("--crops", metavar="DIR", help="write aligned face crops (eyes level) into DIR")
    parser.add_argument("--crop-size", type=int, default=112, help="side of the aligned crops (default: 112)")


def detect_extras(args: argparse.Namespace, detector: Any, result: Any, image: Any, path: str) -> None:
    """For ``blazeface detect``: add the pose to ``result.extras`` and write crops, as the options ask."""
    if getattr(args, "pose", False) and len(result):
        from ..align import upright_redetect
        from ..pose import estimate_poses

        upright = upright_redetect(detector, image, result)
        result.extras["pose"] = [p.to_dict() for p in estimate_poses(upright)]
    if getattr(args, "crops", None) and len(result):
        from ..align import aligned_crops

        out = Path(args.crops)
        out.mkdir(parents=True, exist_ok=True)
        crops = aligned_crops(image, result, size=args.crop_size)
        stem = Path(path).stem or "image"
        names = []
        for i, img in enumerate(crops.to_pil()):
            name = f"{stem}_face{i}.png"
            img.save(out / name)
            names.append(name)
        result.extras["crop"] = names


def run_video(args: argparse.Namespace, stdout: TextIO) -> int:
    from tqdm import tqdm

    from ..detector import FaceDetector
    from .detector import VideoDetector
    from .sources import VideoDecodeError

    source = args.source if args.source is not None else args.input
    if source is None:
        print("blazeface video: give INPUT or --source", file=sys.stderr)
        return 2
    if args.batch_size < 1 or args.crop_size < 8:
        print("blazeface video: --batch-size must be ≥ 1 and --crop-size ≥ 8", file=sys.stderr)
        return 2
    detector = FaceDetector(args.model, device=args.device, min_score=args.min_score, weights=args.weights)
    video = VideoDetector(detector, smoothing=args.smooth, max_missed=args.max_missed, pose=args.pose,
                          batch_size=args.batch_size, keep_images=bool(args.out or args.crops),
                          roi_tracking=args.roi_tracking)
    try:
        results = video(source, fps=args.fps)
    except (VideoDecodeError, OSError, ImportError, ValueError) as exc:
        print(f"blazeface video: {exc}", file=sys.stderr)
        return 1
    src = video.source
    assert src is not None
    out: TextIO = open(args.jsonl, "w", encoding="utf-8") if args.jsonl else stdout
    writer = None
    crops_dir = Path(args.crops) if args.crops else None
    if crops_dir:
        crops_dir.mkdir(parents=True, exist_ok=True)
    total = src.frame_count if args.max_frames is None else min(src.frame_count or args.max_frames, args.max_frames)
    bar = tqdm(total=total, unit="frame", desc=f"video ({detector.model_name}, {args.smooth})", file=sys.stderr,
               disable=args.quiet or None)
    status, frames, faces = 0, 0, 0
    try:
        for r in results:
            if args.out:
                from .writer import VideoWriter, annotate

                if writer is None:
                    h, w = r.image.shape[:2]
                    writer = VideoWriter(args.out, src.fps or args.fps or 30.0, (w, h))
                writer.write(annotate(r.image, r))
            if crops_dir and len(r.faces):
                from ..align import aligned_crops

                for tid, img in zip(r.track_ids, aligned_crops(r.image, r.faces, size=args.crop_size).to_pil()):
                    img.save(crops_dir / f"frame{r.index:06d}_track{tid}.png")
            out.write(json.dumps(r.to_dict()) + "\n")
            frames += 1
            faces += len(r.faces)
            bar.update(1)
            bar.set_postfix(faces=len(r.faces), tracks=len(video.tracker.tracks) if video.tracker else 0)
            if args.max_frames is not None and frames >= args.max_frames:
                break
    except VideoDecodeError as exc:
        bar.close()
        print(f"blazeface video: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:  # pragma: no cover - interactive
        print("blazeface video: interrupted", file=sys.stderr)
        status = 130
    finally:
        close = getattr(results, "close", None)
        if callable(close):
            close()
        bar.close()
        if writer is not None:
            writer.close()
        if out is not stdout:
            out.close()
    if frames == 0 and status == 0:
        print(f"blazeface video: {src.name}: no frames", file=sys.stderr)
        status = 1
    if not args.quiet:
        print(f"blazeface video: {frames} frames, {faces} faces, "
              f"{video.tracker._next_id if video.tracker else 0} tracks", file=sys.stderr)
    return status

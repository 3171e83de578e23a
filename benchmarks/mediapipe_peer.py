#!/usr/bin/env python3
"""Time MediaPipe's own face detection pipeline (run with a Python that has ``mediapipe==0.10.14``).

    python mediapipe_peer.py --model 0 --repeat 200 IMAGE [IMAGE ...]
    python mediapipe_peer.py --serve IMAGE [IMAGE ...]

Prints one JSON object: per-image median latency (ms) of ``FaceDetection.process`` on decoded RGB arrays,
and the loop throughput. Used by ``bench_speed.py`` as a subprocess so MediaPipe's numpy<2 stays apart.
With ``--serve`` it stays up, prints ``{"ready": ...}``, then answers each stdin line ``INDEX COUNT`` with a JSON
list of ``COUNT`` latencies (s) of image ``INDEX`` (after 10 untimed runs), so that the caller can interleave
short blocks of MediaPipe and of its own pipeline on a machine whose speed drifts.
"""
import argparse
import json
import statistics
import sys
import time

import mediapipe as mp
import numpy as np
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+")
    ap.add_argument("--model", type=int, default=0, help="model_selection: 0 short range, 1 full range sparse")
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--serve", action="store_true", help="answer 'INDEX COUNT' lines on stdin (see above)")
    args = ap.parse_args()
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in args.images]
    if args.serve:
        serve(arrays, args.model)
        return
    out = {"mediapipe_version": mp.__version__, "cases": []}
    with mp.solutions.face_detection.FaceDetection(model_selection=args.model, min_detection_confidence=0.5) as det:
        for path, rgb in zip(args.images, arrays):
            timed(det, rgb, args.warmup)
            times = timed(det, rgb, args.repeat)
            out["cases"].append({"image": path, "size_wh": [rgb.shape[1], rgb.shape[0]],
                                 "median_ms": statistics.median(times) * 1e3,
                                 "faces": len(det.process(rgb).detections or [])})
        # Throughput over a list (MediaPipe has no batch API: one image at a time).
        t = time.perf_counter()
        n = 0
        for _ in range(max(1, args.repeat // len(arrays))):
            for rgb in arrays:
                det.process(rgb)
                n += 1
        out["images_per_s"] = n / (time.perf_counter() - t)
    print(json.dumps(out))


def timed(det, rgb: np.ndarray, count: int) -> list[float]:
    times = []
    for _ in range(count):
        t = time.perf_counter()
        det.process(rgb)
        times.append(time.perf_counter() - t)
    return times


def serve(arrays: list[np.ndarray], model: int) -> None:
    with mp.solutions.face_detection.FaceDetection(model_selection=model, min_detection_confidence=0.5) as det:
        for rgb in arrays:
            timed(det, rgb, 20)
        print(json.dumps({"ready": mp.__version__}), flush=True)
        for line in sys.stdin:
            index, count = map(int, line.split())
            timed(det, arrays[index], 10)
            print(json.dumps(timed(det, arrays[index], count)), flush=True)


if __name__ == "__main__":
    main()

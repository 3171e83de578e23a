"""Run a detector over a dataset's images and collect detections and timings for :func:`evaluate`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..io import read_image
from .data import Dets, GroundTruth


@dataclass
class RunResult:
    """Detections per image key (``[N, 5]`` ``x, y, w, h, score``) and seconds per image (detection only,
    excluding file decoding)."""

    detections: Dets
    seconds: dict[str, float] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * float(np.mean(list(self.seconds.values()))) if self.seconds else float("nan")

    def ms_per_image_at(self, width: int) -> float:
        """Mean ms per image over images exactly ``width`` pixels wide (the 1024-wide WIDER images)."""
        sizes = self.__dict__.get("_sizes", {})
        vals = [s for k, s in self.seconds.items() if sizes.get(k, (0, 0))[0] == width]
        return 1000.0 * float(np.mean(vals)) if vals else float("nan")


def run_detector(detector, gt: GroundTruth, keys: list[str] | None = None,
                 progress: Callable[[int, int], None] | None = None, warmup: bool = True) -> RunResult:
    """Detect faces in every image of ``gt`` one image at a time (as a user would call it), timing each call
    (after one untimed warm-up call on the first image)."""
    keys = list(gt.images) if keys is None else keys
    out = RunResult({})
    if warmup and keys:
        detector.detect_tensors([torch.from_numpy(read_image(gt.image_path(keys[0])).copy()).to(detector.device)])
    sizes = {}
    for i, key in enumerate(keys):
        img = torch.from_numpy(read_image(gt.image_path(key)).copy()).to(detector.device)
        t0 = time.perf_counter()
        det = detector.detect_tensors([img], [key])[0]
        out.seconds[key] = time.perf_counter() - t0
        sizes[key] = det.image_size
        out.detections[key] = np.concatenate([det.xywh, det.scores[:, None]], axis=1).astype(np.float64)
        rec = det.to_dict()
        rec["path"] = str(gt.image_path(key))
        out.records.append(rec)
        if progress:
            progress(i + 1, len(keys))
    out.__dict__["_sizes"] = sizes
    return out

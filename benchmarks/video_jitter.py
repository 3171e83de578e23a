"""Keypoint jitter and lag of tracked, smoothed faces on synthetic clips with a known trajectory (issue 4).

Each clip pastes a face cut from a public-domain fixture photo onto a textured background at known sub-pixel
positions (bicubic warp), with Gaussian sensor noise (σ = 4 grey levels) on every frame:

- **still**: the face holds still at a sub-pixel position for 60 frames (only the sensor noise changes);
- **moving**: the face then moves for 120 frames along a smooth Lissajous path (±110 px, ±40 px; up to
  ~6 px per frame at 30 fps; the motion starts abruptly after the still part).

The true keypoints are the path plus a constant per-keypoint offset (where the detector puts that keypoint
on that face); the offset is estimated per segment as the mean of raw detection minus path, so a constant
detector bias (which differs slightly with the sub-pixel position of the still face) is not counted as jitter. **Jitter** is the RMS distance of the keypoints from the truth, in %
of the inter-ocular distance (IOD). **Lag** is the time shift τ (frames) that best aligns the output with the
truth (``min_τ Σ |out(t) - truth(t - τ)|²`` on the moving part, evaluated on the analytic path).
Detections come from ``FaceDetector("short_range")`` once per clip; every smoother runs on the same detections
through :class:`blazeface.video.FaceTracker`. **default** is what ``VideoDetector`` / ``blazeface video`` do by
default: ROI tracking (each tracked face detected again in a square around its predicted position, see
``VideoDetector``) plus the default smoother; it runs the detector itself. Each method's constant per-segment
offset is its own (a constant bias is not jitter).

    python benchmarks/video_jitter.py [--frames-still 60 --frames-moving 120] [--plot benchmarks/video_jitter.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from blazeface import FaceDetector  # noqa: E402
from blazeface.io import load_image  # noqa: E402
from blazeface.video import FaceTracker, VideoDetector  # noqa: E402
from blazeface.video.smoothing import DEFAULT_SMOOTHING  # noqa: E402
from blazeface.video.synthetic import background, cut_face, render  # noqa: E402

FIXTURES = ("astronaut.png", "grace_hopper.jpg", "camera.png")
FPS = 30.0
WIDTH, HEIGHT = 640, 480
FACE_BOX = 170.0  # face box side in the clip, pixels (a webcam selfie at 640×480)


def path_fn(n_still: int, n_moving: int):
    """The true position of the patch centre at (fractional) frame t."""
    x0, y0 = 320.37, 236.61

    def at(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        u = np.clip((t - n_still) / n_moving, 0.0, 1.0)
        x = x0 + 110.0 * np.sin(2 * np.pi * u)
        y = y0 + 40.0 * np.sin(4 * np.pi * u)
        return np.stack([x, y], -1)

    return at


def make_clip(detector: FaceDetector, fixture: str, n_still: int, n_moving: int, seed: int = 0):
    img = load_image(ROOT / "examples" / fixture)
    found = detector(img)
    if not len(found):
        raise RuntimeError(f"{fixture}: no face")
    box = found.boxes[0]
    side = max(box[2] - box[0], box[3] - box[1])
    patch = cut_face(img, box, margin=1.7, size=int(round(1.7 * FACE_BOX)))
    bg = background(WIDTH, HEIGHT, seed)
    rng = np.random.default_rng(seed)
    at = path_fn(n_still, n_moving)
    frames_t = np.arange(n_still + n_moving)
    pos = at(frames_t)
    frames = [render(bg, [patch], [tuple(p)], noise=4.0, rng=rng) for p in pos]
    return frames, at, side


def run_smoother(raw_dets, smoothing: str, params: dict | None = None):
    tracker = FaceTracker(smoothing=smoothing, smoothing_params=params)
    out, ids = [], []
    for i, det in enumerate(raw_dets):
        res = tracker.update(det, i / FPS)
        if len(res):
            out.append(res.keypoints[0])
            ids.append(res.extras["track_id"][0])
        else:
            out.append(np.full((6, 2), np.nan))
            ids.append(None)
    return np.stack(out), ids


METHODS = ("none", "one-euro", "kalman", "default")


def run_default(detector: FaceDetector, frames: list[np.ndarray]):
    """``VideoDetector``'s default pipeline (ROI tracking + the default smoother) on the clip."""
    out, ids = [], []
    for r in VideoDetector(detector)(frames):
        if len(r.faces):
            out.append(r.faces.keypoints[0])
            ids.append(r.track_ids[0])
        else:
            out.append(np.full((6, 2), np.nan))
            ids.append(None)
    return np.stack(out), ids


def segment_offset(raw_kp: np.ndarray, at, frames: np.ndarray) -> np.ndarray:
    """Where the detector puts each keypoint relative to the path, on average over a segment ``[6, 2]``."""
    return np.nanmean(raw_kp[frames] - at(frames)[:, None], axis=0)


def metrics(kps: np.ndarray, offset: np.ndarray, at, frames: np.ndarray, iod: float, lag: bool = True) -> dict:
    truth = at(frames)[:, None] + offset
    err = np.linalg.norm(kps[frames] - truth, axis=-1)
    jitter = 100.0 * float(np.sqrt(np.nanmean(err ** 2))) / iod
    if not lag:  # a still face has no lag to measure
        return {"jitter_pct_iod": round(jitter, 2)}
    taus = np.arange(-4.0, 4.0001, 0.05)
    cost = [np.nanmean(np.sum((kps[frames] - (at(frames - tau)[:, None] + offset)) ** 2, -1)) for tau in taus]
    return {"jitter_pct_iod": round(jitter, 2), "lag_frames": round(float(taus[int(np.argmin(cost))]), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames-still", type=int, default=60)
    ap.add_argument("--frames-moving", type=int, default=120)
    ap.add_argument("--fixtures", nargs="+", default=list(FIXTURES))
    ap.add_argument("--plot", default=str(ROOT / "benchmarks" / "video_jitter.png"))
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "video_jitter.json"))
    ap.add_argument("--params", help='JSON {"kalman": {...}, "one-euro": {...}} to try other parameters')
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # batched small inputs: one thread is fastest on a shared CPU
    params = json.loads(args.params) if args.params else {}
    detector = FaceDetector("short_range", device="cpu")
    n_s, n_m = args.frames_still, args.frames_moving
    still = np.arange(5, n_s)  # skip the first frames (filters start from the first detection)
    moving = np.arange(n_s, n_s + n_m)
    report: dict = {"fps": FPS, "size": [WIDTH, HEIGHT], "face_box_px": FACE_BOX, "noise_sigma": 4.0,
                    "default": DEFAULT_SMOOTHING, "clips": {}}
    curves = {}
    for fixture in args.fixtures:
        t0 = time.perf_counter()
        frames, at, _ = make_clip(detector, fixture, n_s, n_m)
        raw = detector.detect_tensors([torch.from_numpy(f) for f in frames])
        missing = sum(len(r) == 0 for r in raw)
        raw_kp = np.stack([r.keypoints[0] if len(r) else np.full((6, 2), np.nan) for r in raw])
        offset = np.zeros((len(frames), 6, 2))
        offset[:n_s] = segment_offset(raw_kp, at, still)
        offset[n_s:] = segment_offset(raw_kp, at, moving)
        iod = float(np.linalg.norm(offset[-1, 1] - offset[-1, 0]))
        clip: dict = {"frames": len(frames), "missed_detections": missing, "iod_px": round(iod, 1), "methods": {}}
        for name in METHODS:
            kps, ids = run_default(detector, frames) if name == "default" else run_smoother(raw, name, params.get(name))
            own = np.zeros_like(offset)
            own[:n_s] = segment_offset(kps, at, still)
            own[n_s:] = segment_offset(kps, at, moving)
            clip["methods"][name] = {
                "still": metrics(kps, own[still[0]], at, still, iod, lag=False),
                "moving": metrics(kps, own[moving[0]], at, moving, iod),
                "track_ids": sorted({i for i in ids if i is not None}),
            }
            curves[(fixture, name)] = (kps, own, at, iod)
        for part in ("still", "moving"):
            r = clip["methods"]["none"][part]["jitter_pct_iod"]
            for name in METHODS[1:]:
                clip["methods"][name][part]["jitter_ratio_vs_raw"] = round(clip["methods"][name][part]["jitter_pct_iod"] / r, 3)
        clip["seconds"] = round(time.perf_counter() - t0, 1)
        report["clips"][fixture] = clip
        print(fixture, json.dumps(clip["methods"]), f"({clip['seconds']} s)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.plot:
        plot(curves, args.fixtures[0], n_s, n_m, args.plot)
    return 0


def plot(curves, fixture: str, n_s: int, n_m: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    t = np.arange(n_s + n_m)
    kps, offset, at, iod = curves[(fixture, "none")]
    styles = {"none": ("tab:red", "raw detections"), "one-euro": ("tab:blue", "One Euro"),
              "kalman": ("tab:green", "Kalman (CV)"), "default": ("tab:purple", "default: ROI tracking + Kalman")}
    truth = at(t)[:, None] + offset
    truth[:5] = np.nan
    axes[0].plot(t, truth[:, 2, 0], "k-", lw=2.5, alpha=0.35, label="truth")
    for name, (color, label) in styles.items():
        k, own = curves[(fixture, name)][0], curves[(fixture, name)][1]
        truth = at(t)[:, None] + own
        truth[:5] = np.nan
        axes[0].plot(t, k[:, 2, 0], color=color, lw=1, label=label)
        err = 100 * np.linalg.norm(k - truth, axis=-1).mean(-1) / iod
        axes[1].plot(t, err, color=color, lw=1, label=label)
    for ax in axes:
        ax.axvline(n_s, color="grey", ls=":")
    axes[0].set_ylabel("nose tip x (px)")
    axes[0].legend(loc="lower left", fontsize=8)
    axes[0].set_title(f"{fixture}: still for {n_s} frames, then moving (30 fps, σ=4 noise, short_range)")
    axes[1].set_ylabel("mean keypoint error (% IOD)")
    axes[1].set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())

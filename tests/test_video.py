"""Video: sources, tracking, smoothing, corrupt files, the ``blazeface video`` command (issue 4).

Clips are synthesized from the public-domain fixtures (faces pasted at known sub-pixel positions), small
(256×192, ≤ 40 frames) so that the whole file runs in a few seconds on two CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from blazeface import FaceDetector
from blazeface.cli import main
from blazeface.io import load_image
from blazeface.video import (FaceTracker, KalmanFilter, OneEuroFilter, Prefetcher, VideoDecodeError, VideoDetector,
                             linear_sum_assignment, open_source)
from blazeface.video.synthetic import background, cut_face, render

from .conftest import EXAMPLES

import av  # noqa: E402  (in the [test] extra: a missing PyAV fails, never skips)
W, H, FPS = 256, 192, 30


@pytest.fixture(scope="module")
def detector():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches on a shared 2-core machine: one thread is several times faster
    yield FaceDetector("short_range", device="cpu")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def patches(detector: FaceDetector) -> dict:
    out = {}
    for name in ("astronaut.png", "grace_hopper.jpg"):
        img = load_image(EXAMPLES / name)
        out[name] = cut_face(img, detector(img).boxes[0], margin=1.7, size=100)
    return out


@pytest.fixture(scope="module")
def single_clip(patches: dict) -> tuple[list[np.ndarray], np.ndarray]:
    """One face moving smoothly (sub-pixel) for 40 frames, with sensor noise."""
    bg = background(W, H, 1)
    rng = np.random.default_rng(0)
    t = np.arange(40)
    pos = np.stack([90 + 2.3 * t + 8 * np.sin(t / 6), 96.4 + 10 * np.sin(t / 9)], 1)
    return [render(bg, [patches["astronaut.png"]], [tuple(p)], noise=3.0, rng=rng) for p in pos], pos


def write_video(path: Path, frames: list[np.ndarray], options: dict | None = None) -> Path:
    container = av.open(str(path), "w", options=options or {})
    stream = container.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
    for f in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


# --- tracking ------------------------------------------------------------------------------------
def test_track_id_is_constant_for_a_face_present_throughout(detector: FaceDetector, single_clip) -> None:
    frames, pos = single_clip
    results = list(detector.track(frames, batch_size=8))
    assert [r.index for r in results] == list(range(len(frames)))
    assert results[1].time == pytest.approx(1 / 30)
    assert all(r.track_ids == [0] for r in results)
    # smoothed keypoints follow the face: the nose stays at a constant offset from the true position ± 15% IOD
    nose = np.stack([r.faces.keypoints[0, 2] for r in results]) - pos
    iod = np.linalg.norm(results[0].faces.keypoints[0, 1] - results[0].faces.keypoints[0, 0])
    assert np.abs(nose - nose.mean(0)).max() < 0.15 * iod
    d = results[5].to_dict()
    assert list(d) == ["frame", "time", "faces"] and list(d["faces"][0])[:4] == ["track_id", "score", "box", "keypoints"]


def test_two_faces_crossing_keep_their_ids(detector: FaceDetector, patches: dict) -> None:
    """Two faces move towards each other, one passes in front of the other (hiding it), and they part."""
    bg = background(W, H, 2)
    rng = np.random.default_rng(1)
    n = 36
    t = np.arange(n)
    pa = np.stack([40 + 5.0 * t, 86 + 0.2 * t], 1)    # left to right, behind
    pb = np.stack([215 - 5.0 * t, 106 - 0.2 * t], 1)  # right to left, in front
    frames = [render(bg, [patches["astronaut.png"], patches["grace_hopper.jpg"]], [tuple(a), tuple(b)],
                     noise=3.0, rng=rng) for a, b in zip(pa, pb)]
    video = VideoDetector(detector, batch_size=12)
    owner: dict[int, int] = {}  # track id -> true face
    seen_both_after = False
    for r in video(frames):
        truth = np.stack([pa[r.index], pb[r.index]])
        for tid, box in zip(r.track_ids, r.faces.cxcywh):
            face = int(np.argmin(np.linalg.norm(truth - box[:2], axis=1)))
            if np.linalg.norm(truth[face] - box[:2]) < 25:
                assert owner.setdefault(tid, face) == face, f"track {tid} switched faces at frame {r.index}"
        if r.index > 28 and len(r.track_ids) == 2:
            seen_both_after = True
    assert seen_both_after and sorted(owner) == [0, 1]


def test_faces_entering_and_leaving(detector: FaceDetector, patches: dict) -> None:
    bg = background(W, H, 4)  # (seed 3's texture holds a face-like false positive)
    rng = np.random.default_rng(2)
    frames = []
    for i in range(24):
        faces, where = [patches["astronaut.png"]], [(70.3 + i, 96.0)]
        if 6 <= i < 14:  # a second face enters, stays 8 frames, leaves
            faces.append(patches["grace_hopper.jpg"])
            where.append((190.0, 90.0 + 0.5 * i))
        frames.append(render(bg, faces, where, noise=3.0, rng=rng))
    ids = [r.track_ids for r in VideoDetector(detector, max_missed=3)(frames)]
    assert all(0 in x for x in ids)
    assert ids[5] == [0] and ids[8] == [0, 1] and ids[20] == [0]
    tracker_ids = {i for x in ids for i in x}
    assert tracker_ids == {0, 1}


def test_tracker_patience_bridges_missed_frames() -> None:
    from blazeface import Detections

    def det(x: float) -> Detections:
        kp = np.array([[x - 10, 0], [x + 10, 0], [x, 8], [x, 16], [x - 20, 4], [x + 20, 4]], dtype=np.float32) + 50
        return Detections(np.array([[x + 20, 30, x + 80, 90]]), np.array([0.9]), kp[None], (320, 240))

    tracker = FaceTracker(max_missed=4)
    empty = Detections.empty((320, 240))
    ids = []
    for i in range(20):
        d = empty if 8 <= i < 12 else det(3.0 * i)  # 4 frames missing while the face keeps moving
        ids.append(tracker.update(d, i / 30).extras["track_id"])
    assert ids[7] == [0] and ids[9] == [] and ids[12] == [0] and ids[19] == [0]
    tracker = FaceTracker(max_missed=2)
    ids = [tracker.update(empty if 8 <= i < 12 else det(3.0 * i), i / 30).extras["track_id"] for i in range(14)]
    assert ids[7] == [0] and ids[12] == [1]  # patience exceeded: a new track


# --- smoothing -----------------------------------------------------------------------------------
def test_kalman_follows_constant_velocity_without_lag_and_one_euro_removes_noise() -> None:
    kf = KalmanFilter(0.02, 4.0)
    rng = np.random.default_rng(0)
    outs = [kf(np.array([3.0 * i]), i / 30, 100.0)[0] for i in range(60)]
    assert abs(outs[-1] - 3.0 * 59) < 0.05  # no steady-state lag on a ramp
    assert kf.predict(60 / 30)[0] == pytest.approx(180.0, abs=0.1)
    oe = OneEuroFilter(min_cutoff=0.5, beta=3.0)
    noisy = 50 + rng.normal(0, 1.0, 200)
    smooth = np.array([oe(np.array([v]), i / 30, 100.0)[0] for i, v in enumerate(noisy)])
    assert smooth[50:].std() < 0.35 * noisy[50:].std()


def test_hungarian_matches_brute_force() -> None:
    import itertools

    rng = np.random.default_rng(0)
    for _ in range(50):
        n, m = (int(v) for v in rng.integers(1, 6, 2))
        cost = rng.random((n, m))
        rows, cols = linear_sum_assignment(cost)
        best = min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n)) if n <= m \
            else min(sum(cost[p[j], j] for j in range(m)) for p in itertools.permutations(range(n), m))
        assert cost[rows, cols].sum() == pytest.approx(best) and len(rows) == min(n, m)


# --- sources and errors ----------------------------------------------------------------------------
def test_video_file_and_image_folder_sources(tmp_path: Path, single_clip) -> None:
    frames = single_clip[0][:12]
    path = write_video(tmp_path / "clip.mkv", frames)
    src = open_source(path)
    got = list(src)
    assert len(got) == 12 and got[0].image.shape == (H, W, 3) and src.fps == pytest.approx(30)
    assert got[3].time == pytest.approx(0.1, abs=1e-3)
    assert np.abs(got[0].image.astype(int) - frames[0].astype(int)).mean() < 6  # lossy codec
    cv_src = open_source(path, backend="opencv")
    assert len(list(cv_src)) == 12
    from PIL import Image

    for i, f in enumerate(frames[:5]):
        Image.fromarray(f).save(tmp_path / f"f{i:03d}.png")
    seq = list(open_source(str(tmp_path), fps=10))
    assert len(seq) == 5 and seq[2].time == pytest.approx(0.2)
    assert len(list(open_source(str(tmp_path / "f00*.png")))) == 5


def test_prefetcher_delivers_items_before_an_error() -> None:
    def gen():
        yield from range(5)
        raise VideoDecodeError("x", 5, "boom")

    got = []
    with pytest.raises(VideoDecodeError, match="boom"):
        for item in Prefetcher(gen(), maxsize=2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("backend,name,options", [("pyav", "clip.mp4", {"movflags": "faststart"}),
                                                  ("pyav", "clip.mkv", {}), ("opencv", "clip.mp4",
                                                                             {"movflags": "faststart"})])
def test_truncated_video_processes_frames_before_the_damage(detector: FaceDetector, tmp_path: Path, single_clip,
                                                            backend: str, name: str, options: dict) -> None:
    frames = single_clip[0][:30]
    path = write_video(tmp_path / name, frames, options)
    data = path.read_bytes()
    bad = tmp_path / f"truncated_{name}"
    bad.write_bytes(data[: len(data) * 6 // 10])
    results = []
    with pytest.raises(VideoDecodeError) as info:
        for r in VideoDetector(detector, batch_size=4)(open_source(bad, backend=backend)):  # type: ignore[arg-type]
            results.append(r)
    assert 0 < len(results) < 30
    assert info.value.frames_read == len(results)
    assert str(bad) in str(info.value)
    assert all(r.track_ids == [0] for r in results)


def test_missing_and_garbage_files_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(VideoDecodeError, match="no such file"):
        open_source(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(VideoDecodeError):
        list(open_source(junk))


# --- command line --------------------------------------------------------------------------------
def test_cli_video_jsonl_annotated_output_and_pose(tmp_path: Path, single_clip) -> None:
    path = write_video(tmp_path / "clip.mkv", single_clip[0][:16])
    jsonl, out = tmp_path / "t.jsonl", tmp_path / "annotated.mp4"
    assert main(["video", str(path), "--jsonl", str(jsonl), "--out", str(out), "--pose", "--smooth", "one-euro",
                 "--quiet", "--device", "cpu", "--crops", str(tmp_path / "crops")]) == 0
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(16))
    assert lines[2]["time"] == pytest.approx(2 / 30, abs=1e-3)
    face = lines[8]["faces"][0]
    assert face["track_id"] == 0 and len(face["box"]) == 4 and len(face["keypoints"]) == 6
    assert set(face["pose"]) >= {"yaw", "pitch", "roll", "rotation", "translation"}
    assert len(list(open_source(out))) == 16
    assert len(list((tmp_path / "crops").glob("*.png"))) == 16


def test_cli_video_reports_a_truncated_file(tmp_path: Path, single_clip, capsys) -> None:
    path = write_video(tmp_path / "clip.mkv", single_clip[0][:30])
    data = path.read_bytes()
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(data[: len(data) // 2])
    jsonl = tmp_path / "t.jsonl"
    assert main(["video", str(bad), "--jsonl", str(jsonl), "--quiet", "--device", "cpu"]) == 1
    n = len(jsonl.read_text().splitlines())
    assert 0 < n < 30
    err = capsys.readouterr().err
    assert "bad.mkv" in err and "truncated" in err
    assert main(["video", str(tmp_path / "missing.mp4"), "--quiet"]) == 1
    assert main(["video", "--quiet"]) == 2

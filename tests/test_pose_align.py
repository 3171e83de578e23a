"""Head pose from the six keypoints, and rotation-normalized crops (issue 4)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from blazeface import FaceDetector
from blazeface.align import aligned_crops, crop_to_image, face_roi, image_to_crop, upright_redetect
from blazeface.cli import main
from blazeface.io import load_image
from blazeface.pose import (CANONICAL_FACE_MODEL, default_camera_matrix, estimate_pose, project,
                            quaternion_from_rotation, rotation_from_angles)

from .conftest import EXAMPLES

import cv2  # noqa: E402  (in the [test] extra: a missing OpenCV fails, never skips)


@pytest.fixture(scope="module")
def detector():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batches of one on a shared 2-core machine: one thread is several times faster
    yield FaceDetector("short_range", device="cpu")
    torch.set_num_threads(threads)


def test_known_poses_are_recovered_from_projections() -> None:
    rng = np.random.default_rng(0)
    k = default_camera_matrix(640, 480)
    for _ in range(60):
        yaw, pitch, roll = rng.uniform(-50, 50), rng.uniform(-30, 30), rng.uniform(-40, 40)
        t = np.array([rng.uniform(-120, 120), rng.uniform(-80, 80), rng.uniform(350, 1500)])
        pts = project(rotation_from_angles(yaw, pitch, roll), t, k)
        pts = pts + rng.normal(0, 0.3, pts.shape)  # sub-pixel keypoint noise
        pose = estimate_pose(pts, (640, 480))
        assert abs(pose.yaw - yaw) < 2 and abs(pose.pitch - pitch) < 2 and abs(pose.roll - roll) < 2
        assert np.allclose(pose.translation, t, rtol=0.05, atol=10)


def test_angle_conventions() -> None:
    k = default_camera_matrix(640, 480)
    t = np.array([0.0, 0.0, 600.0])
    front = project(np.eye(3), t, k)
    # yaw > 0: the nose moves to the image's right; pitch > 0: up; roll > 0: the left eye (image right) goes down
    assert project(rotation_from_angles(20, 0, 0), t, k)[2, 0] > front[2, 0]
    assert project(rotation_from_angles(0, 20, 0), t, k)[2, 1] < front[2, 1]
    rolled = project(rotation_from_angles(0, 0, 20), t, k)
    assert rolled[1, 1] > rolled[0, 1]
    assert math.isclose(math.degrees(math.atan2(rolled[1, 1] - rolled[0, 1], rolled[1, 0] - rolled[0, 0])), 20, abs_tol=1e-6)


def test_quaternion_matches_rotation() -> None:
    r = rotation_from_angles(30, -10, 5)
    w, x, y, z = quaternion_from_rotation(r)
    q = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    assert np.allclose(q, r, atol=1e-9)
    assert CANONICAL_FACE_MODEL.shape == (6, 3)


def test_mirrored_keypoints_flip_yaw_and_roll() -> None:
    """The model is symmetric: mirroring the image (and so swapping left/right labels) negates yaw and roll."""
    k = default_camera_matrix(640, 480)
    swap = [1, 0, 2, 3, 5, 4]
    for yaw, pitch, roll in [(25, 10, 5), (-40, -5, 12), (10, 20, -8)]:
        pts = project(rotation_from_angles(yaw, pitch, roll), np.array([30.0, -20.0, 700.0]), k)
        mirrored = pts[swap].copy()
        mirrored[:, 0] = 640 - mirrored[:, 0]
        a, b = estimate_pose(pts, (640, 480)), estimate_pose(mirrored, (640, 480))
        assert b.yaw == pytest.approx(-a.yaw, abs=1e-4) and b.roll == pytest.approx(-a.roll, abs=1e-4)
        assert b.pitch == pytest.approx(a.pitch, abs=1e-4)


def test_mirrored_photos_flip_yaw(detector: FaceDetector) -> None:
    """Detector on the fixture photos and their mirror images: turned faces change the sign of yaw."""
    for name, turned in [("camera.png", True), ("astronaut.png", True), ("grace_hopper.jpg", False),
                         ("pillow_hopper.png", False)]:
        img = load_image(EXAMPLES / name)
        mirrored = np.ascontiguousarray(img[:, ::-1])
        a = estimate_pose(upright_redetect(detector, img, detector(img)).keypoints[0], (img.shape[1], img.shape[0]))
        b = estimate_pose(upright_redetect(detector, mirrored, detector(mirrored)).keypoints[0],
                          (img.shape[1], img.shape[0]))
        assert abs(a.yaw + b.yaw) < 5, (name, a.yaw, b.yaw)
        if turned:
            assert a.yaw * b.yaw < 0, (name, a.yaw, b.yaw)
    # the profile of the cameraman reads as strongly turned, the other way in the mirror
    img = load_image(EXAMPLES / "camera.png")
    assert estimate_pose(upright_redetect(detector, img, detector(img)).keypoints[0], (512, 512)).yaw > 30


@pytest.mark.parametrize("name", ["astronaut.png", "grace_hopper.jpg"])
def test_roll_of_rotated_photos(detector: FaceDetector, name: str) -> None:
    """Photos rotated in-plane about the image centre (the principal point): roll changes by the angle, ±3°."""
    img = Image.fromarray(load_image(EXAMPLES / name))

    def roll(angle: float) -> float:
        arr = np.asarray(img.rotate(angle, resample=Image.BILINEAR))  # counter-clockwise on screen
        found = detector(arr)
        assert len(found) == 1
        return estimate_pose(upright_redetect(detector, arr, found).keypoints[0], found.image_size).roll

    base = roll(0)
    for angle in (-30, -20, -10, 10, 20, 30):
        assert abs((roll(angle) - base) + angle) < 3, (name, angle)


def test_aligned_crops_level_the_eyes(detector: FaceDetector) -> None:
    img = np.asarray(Image.fromarray(load_image(EXAMPLES / "astronaut.png")).rotate(25, resample=Image.BILINEAR))
    found = detector(img)
    crops = aligned_crops(img, found, size=112)
    assert crops.images.shape == (1, 112, 112, 3) and crops.images.dtype == np.uint8
    eyes = image_to_crop(found.keypoints[0][:2], crops.matrices[0])
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1e-6 and eyes[0, 0] < eyes[1, 0]
    assert np.allclose(crop_to_image(eyes, crops.matrices[0]), found.keypoints[0][:2], atol=1e-6)
    roi = face_roi(found.boxes[0], found.keypoints[0])
    side = max(found.boxes[0][2] - found.boxes[0][0], found.boxes[0][3] - found.boxes[0][1])
    assert roi.side == pytest.approx(1.5 * side)  # MediaPipe's scale 1.5, square_long
    # same pixels as OpenCV's warp with the returned matrix
    ref = cv2.warpAffine(np.ascontiguousarray(img), crops.matrices[0], (112, 112), flags=cv2.INTER_LINEAR)
    assert np.abs(ref.astype(int) - crops.images[0].astype(int)).max() <= 1
    # the detector finds the face (nearly) upright in the crop
    again = detector(crops.images[0])
    assert len(again) == 1
    kp = again.keypoints[0]
    assert abs(math.degrees(math.atan2(kp[1, 1] - kp[0, 1], kp[1, 0] - kp[0, 0]))) < 8  # the photo is at ~20°


def test_cli_detect_pose_and_crops(tmp_path, capsys) -> None:
    out = tmp_path / "d.jsonl"
    assert main(["detect", str(EXAMPLES / "grace_hopper.jpg"), "--pose", "--crops", str(tmp_path / "crops"),
                 "--jsonl", str(out), "--quiet", "--device", "cpu"]) == 0
    rec = json.loads(out.read_text().splitlines()[0])
    face = rec["faces"][0]
    assert set(face["pose"]) >= {"yaw", "pitch", "roll", "rotation", "translation", "quaternion"}
    assert np.asarray(face["pose"]["rotation"]).shape == (3, 3) and len(face["pose"]["translation"]) == 3
    assert abs(face["pose"]["yaw"]) < 15 and face["pose"]["translation"][2] > 0
    crop = Image.open(tmp_path / "crops" / face["crop"])
    assert crop.size == (112, 112)
    # without the options, the record is unchanged
    assert main(["detect", str(EXAMPLES / "grace_hopper.jpg"), "--jsonl", str(out), "--quiet", "--device", "cpu"]) == 0
    assert "pose" not in json.loads(out.read_text())["faces"][0]

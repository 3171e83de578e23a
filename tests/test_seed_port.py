"""The first public PyTorch port's printed outputs on its own test images (``seed_notebook_outputs.json``).

That port's "front" model is today's short-range model (``face_detection_front.tflite`` is byte-identical
to ``face_detection_short_range.tflite``): its printed boxes match ``short_range`` to 4 decimals, while the
2019 fp32 file's weights give boxes up to 0.015 away. So the printed numbers are checked against
``short_range`` (and ``back``), and ``front_2019`` is checked to find the same faces.
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from blazeface import FaceDetector
from blazeface.convert import convert_file
from blazeface.io import read_image
from blazeface.ops import box_iou, decode_boxes

from .conftest import shared, tflite_model

IMAGES = ["1face.png", "3faces.png", "4faces.png"]


def _printed(key, image):
    rows = json.loads(shared("seed_images", "seed_notebook_outputs.json").read_text())[key][image]
    return np.asarray(rows, dtype=np.float32).reshape(-1, 17)


def _match(ours, printed, tol):
    """Pair rows by nearest box/keypoints; returns (our index, printed row) pairs within ``tol``."""
    assert len(ours) == len(printed)
    pairs = []
    for row in printed:
        i = int(np.argmin(np.abs(ours[:, :16] - row[:16]).max(axis=1)))
        assert np.abs(ours[i, :16] - row[:16]).max() <= tol, (ours[i], row)
        pairs.append((i, row))
    return pairs


def _cluster_mean_score(detector, tensor, top_box, min_score):
    """That port's score: the mean score of the weighted-NMS cluster around a detection."""
    with torch.inference_mode():
        reg, logits = detector.net(tensor[None])
    scores = torch.sigmoid(logits.clamp(-100, 100))[0, :, 0]
    boxes, _ = decode_boxes(reg[0], detector.anchors, detector.config.box_scale)
    keep = scores >= min_score
    members = scores[keep][box_iou(boxes[keep], torch.tensor([top_box]))[:, 0] > 0.3]
    return float(members.mean())


@pytest.mark.parametrize("image", IMAGES)
def test_short_range_reproduces_port_front_outputs(image):
    detector = FaceDetector("short_range", min_score=0.75, device="cpu")  # the port's front threshold
    pixels = read_image(shared("seed_images", image))
    ours = detector(pixels).to_legacy()
    tensor = torch.from_numpy(pixels.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)
    for i, row in _match(ours, _printed("batch_front", image), 0.005):
        top_box = ours[i, [1, 0, 3, 2]].tolist()
        assert abs(_cluster_mean_score(detector, tensor, top_box, 0.75) - row[16]) <= 0.001
        assert ours[i, 16] >= row[16] - 1e-4  # ours is the top detection's own score


@pytest.mark.parametrize("image", IMAGES)
def test_back_reproduces_port_back_outputs(image):
    detector = FaceDetector("back", device="cpu")
    pixels = torch.from_numpy(read_image(shared("seed_images", image))).permute(2, 0, 1)[None].float()
    # The port fed cv2.resize(img, (256, 256)): bilinear with pixel centres, rounded to uint8.
    resized = F.interpolate(pixels, size=(256, 256), mode="bilinear", align_corners=False).round().to(torch.uint8)[0]
    _match(detector(resized).to_legacy(), _printed("batch_back", image), 0.005)


@pytest.fixture(scope="module")
def front_2019(tmp_path_factory):
    out = tmp_path_factory.mktemp("w") / "front_2019.safetensors"
    convert_file(tflite_model("front_2019"), out)
    return FaceDetector("front_2019", weights=out, device="cpu")


@pytest.mark.parametrize("image", IMAGES)
def test_front_2019_finds_the_port_faces(front_2019, image):
    ours = front_2019(shared("seed_images", image))
    printed = _printed("batch_front", image)
    assert len(ours) == len(printed)
    if len(ours):
        theirs = torch.tensor(printed[:, [1, 0, 3, 2]] * 128.0, dtype=torch.float32)
        ious = box_iou(torch.from_numpy(ours.boxes), theirs)
        assert torch.all(ious.max(dim=0).values >= 0.5)  # the same faces (WIDER-style match)

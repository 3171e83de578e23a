"""The user API: batching, input kinds, Detections formats, keypoint names, drawing, JSON."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from blazeface import Detections, FaceDetector, FaceKeypoint, create_model, get_config, list_models
from blazeface.io import read_image

from .conftest import EXAMPLES


@pytest.fixture(scope="module")
def detector():
    return FaceDetector("short_range", device="cpu")


@pytest.fixture(scope="module")
def images():
    return {name: read_image(EXAMPLES / name) for name in ["astronaut.png", "grace_hopper.jpg", "pillow_hopper.png"]}


def test_registry():
    assert set(list_models(pretrained=True)) == {"short_range", "back", "full_range", "full_range_sparse"}
    assert {"front_2019", "paper"} <= set(list_models(pretrained=False))
    assert get_config("front").name == "short_range"
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        get_config("nope")
    with pytest.raises(ValueError, match="ships no weights"):
        create_model("front_2019")


def test_batch_of_different_sizes_equals_single_images(detector, images):
    batch = detector(list(images.values()))
    assert isinstance(batch, list) and len(batch) == 3
    for (name, img), res in zip(images.items(), batch):
        single = detector(img)
        assert res.image_size == (img.shape[1], img.shape[0])
        assert np.allclose(res.boxes, single.boxes, atol=1e-3) and np.allclose(res.scores, single.scores, atol=1e-6)


def test_tensor_inputs_match_arrays(detector, images):
    img = images["grace_hopper.jpg"]
    ref = detector(img)
    chw_uint8 = torch.from_numpy(img.copy()).permute(2, 0, 1)
    assert np.allclose(detector(chw_uint8).boxes, ref.boxes, atol=1e-3)
    chw_float = chw_uint8.float() / 255.0
    res = detector(chw_float)
    assert np.abs(res.boxes - ref.boxes).max() < 0.5 and np.abs(res.scores - ref.scores).max() < 1e-3
    batched = detector(torch.stack([chw_uint8, chw_uint8]))
    assert isinstance(batched, list) and len(batched) == 2


def test_bgr_option(detector, images):
    img = images["astronaut.png"]
    assert np.allclose(detector(img[:, :, ::-1].copy(), bgr=True).boxes, detector(img).boxes)


def test_pil_input(detector, images):
    img = images["astronaut.png"]
    assert np.allclose(detector(Image.fromarray(img)).boxes, detector(img).boxes)


def test_detections_formats_hand_checked():
    d = Detections(boxes=[[10, 20, 50, 100]], scores=[0.9], keypoints=np.arange(12).reshape(1, 6, 2), image_size=(200, 400))
    assert d.xywh.tolist() == [[10, 20, 40, 80]]
    assert d.cxcywh.tolist() == [[30, 60, 40, 80]]
    assert d.xyxyn[0].tolist() == pytest.approx([0.05, 0.05, 0.25, 0.25])
    assert d.xywhn[0].tolist() == pytest.approx([0.05, 0.05, 0.2, 0.2])
    assert d.keypoint(FaceKeypoint.NOSE_TIP).tolist() == [[4, 5]]
    assert d.keypoint("left_eye").tolist() == [[2, 3]]
    assert d.keypoints_normalized[0, 1].tolist() == pytest.approx([2 / 200, 3 / 400])
    legacy = d.to_legacy()
    assert legacy.shape == (1, 17)
    assert legacy[0, :4].tolist() == pytest.approx([0.05, 0.05, 0.25, 0.25])  # ymin, xmin, ymax, xmax
    assert legacy[0, 4:6].tolist() == pytest.approx([0.0, 1 / 400]) and legacy[0, 16] == pytest.approx(0.9)
    parsed = json.loads(d.to_json())
    assert parsed == {"width": 200, "height": 400, "model": None,
                      "faces": [{"score": 0.9, "box": [10.0, 20.0, 50.0, 100.0],
                                 "keypoints": [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0], [8.0, 9.0], [10.0, 11.0]]}]}
    assert len(d[0]) == 1 and len(d[[]]) == 0


def test_empty_result_is_not_none(detector):
    result = detector(np.zeros((64, 64, 3), np.uint8))
    assert result is not None and len(result) == 0
    assert json.loads(result.to_json())["faces"] == []
    assert result.plot().size == (64, 64)


def test_keypoints_are_named_from_the_subjects_side(detector, images):
    face = detector(images["astronaut.png"])  # an upright, frontal face
    assert len(face) == 1
    right_eye, left_eye = face.keypoint(FaceKeypoint.RIGHT_EYE)[0], face.keypoint(FaceKeypoint.LEFT_EYE)[0]
    nose, mouth = face.keypoint(FaceKeypoint.NOSE_TIP)[0], face.keypoint(FaceKeypoint.MOUTH_CENTER)[0]
    assert right_eye[0] < left_eye[0]  # the subject's right eye is on the viewer's left
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]  # eyes above nose above mouth
    assert face.keypoint(FaceKeypoint.RIGHT_EAR_TRAGION)[0, 0] < right_eye[0]
    assert face.keypoint(FaceKeypoint.LEFT_EAR_TRAGION)[0, 0] > left_eye[0]
    x1, y1, x2, y2 = face.boxes[0]
    assert x1 < nose[0] < x2 and y1 < nose[1] < y2


def test_plot_draws_boxes(detector, images):
    img = images["astronaut.png"]
    face = detector(img)
    drawn = np.asarray(face.plot(img))
    assert drawn.shape == img.shape
    x1, y1, x2, y2 = face.boxes[0].round().astype(int)
    assert (drawn[y1:y2, x1] == [0, 255, 0]).all(axis=1).mean() > 0.9  # the left edge is green
    assert np.array_equal(drawn[0:10, 0:10], img[0:10, 0:10])  # away from faces nothing changes
    with pytest.raises(ValueError, match="detections are for"):
        face.plot(np.zeros((10, 10, 3), np.uint8))


def test_thresholds(images):
    img = images["grace_hopper.jpg"]
    low = FaceDetector("short_range", device="cpu", min_score=0.99)(img)
    assert len(low) == 0
    with pytest.raises(ValueError, match="min_score"):
        FaceDetector("short_range", min_score=1.5)


@pytest.mark.parametrize("model", ["back", "full_range", "full_range_sparse"])
def test_every_shipped_model_finds_the_astronaut(model, images):
    faces = FaceDetector(model, device="cpu")(images["astronaut.png"])
    assert len(faces) == 1
    # MediaPipe's short-range box for this image (fixtures/mediapipe_0.10.14.json), in pixels.
    ref = np.array([0.346807, 0.161858, 0.346807 + 0.186219, 0.161858 + 0.186219]) * 512
    inter = np.clip(np.minimum(faces.boxes[0, 2:], ref[2:]) - np.maximum(faces.boxes[0, :2], ref[:2]), 0, None).prod()
    union = np.prod(faces.boxes[0, 2:] - faces.boxes[0, :2]) + np.prod(ref[2:] - ref[:2]) - inter
    assert inter / union > 0.7


def test_create_model_raw_outputs():
    model = create_model("short_range")
    reg, logits = model(torch.zeros(2, 3, 128, 128))
    assert reg.shape == (2, 896, 16) and logits.shape == (2, 896, 1)
    assert not model.training

"""The default API against MediaPipe 0.10.14's own pipeline on every reference image.

Same faces (a face may be missing on one side only when its score is within 0.02 of the threshold);
matched boxes IoU >= 0.95, keypoints within 2% of the box width, scores within 0.02.
"""

import numpy as np
import pytest

from blazeface import FaceDetector
from blazeface.ops import box_iou

from .conftest import dataset_images, mediapipe_reference

import torch


@pytest.fixture(scope="module", params=[("short_range", "torch"), ("full_range_sparse", "torch"),
                                        ("short_range", "onnxruntime"), ("full_range_sparse", "onnxruntime")],
                ids=lambda p: "-".join(p))
def detector(request):
    model, backend = request.param
    return FaceDetector(model, device="cpu", backend=backend)


def _iou(a, b):
    return float(box_iou(torch.tensor([a]), torch.tensor([b]))[0, 0])


@pytest.mark.parametrize("dataset", ["fixtures", "seed_images", "wider_val_dev"])
def test_same_faces_boxes_keypoints_scores_as_mediapipe(detector, dataset):
    ref = mediapipe_reference(dataset)
    folder = dataset_images(dataset)
    thr = detector.min_score
    names = sorted(ref["images"])
    results = detector([folder / n for n in names])
    matched = 0
    problems = []
    for name, det in zip(names, results):
        rec = ref["images"][name]
        w, h = rec["size_wh"]
        assert det.image_size == (w, h)
        theirs = rec[detector.model_name]
        used = set()
        for r in theirs:
            box = [r["xmin"] * w, r["ymin"] * h, (r["xmin"] + r["width"]) * w, (r["ymin"] + r["height"]) * h]
            ious = [(_iou(box, det.boxes[i].tolist()), i) for i in range(len(det)) if i not in used]
            best_iou, best = max(ious, default=(0.0, -1))
            if best_iou < 0.5:
                if abs(r["score"] - thr) > 0.02:
                    problems.append(f"{name}: MediaPipe face (score {r['score']}) not found")
                continue
            used.add(best)
            matched += 1
            kp_err = np.abs(np.asarray(r["keypoints"]) * [w, h] - det.keypoints[best]).max() / (box[2] - box[0])
            if best_iou < 0.95 or abs(r["score"] - det.scores[best]) > 0.02 or kp_err > 0.02:
                problems.append(f"{name}: IoU {best_iou:.3f}, score {r['score']} vs {det.scores[best]:.4f}, "
                                f"keypoint error {kp_err:.3%}")
        for i in range(len(det)):
            if i not in used and abs(float(det.scores[i]) - thr) > 0.02:
                problems.append(f"{name}: extra face with score {det.scores[i]:.3f}")
    assert matched > 0
    assert not problems, "\n".join(problems)

"""Anchors, decoding, IoU and NMS against hand-computed numbers."""

import math

import pytest
import torch

from blazeface.config import AnchorOptions
from blazeface.ops import box_iou, decode_boxes, generate_anchors, non_max_suppression
from blazeface.registry import get_config


@pytest.mark.parametrize("model,count", [("short_range", 896), ("back", 896), ("front_2019", 896),
                                         ("full_range", 2304), ("full_range_sparse", 2304), ("paper", 896)])
def test_anchor_counts_match_network(model, count):
    config = get_config(model)
    anchors = generate_anchors(config.anchors)
    assert anchors.shape == (count, 4)
    assert config.net.num_anchors == count
    assert torch.all(anchors[:, 2:] == 1.0)  # fixed_anchor_size


def test_short_range_anchor_layout():
    a = generate_anchors(get_config("short_range").anchors)
    # 16×16 grid, 2 per cell, then 8×8 grid, 6 per cell; layer → y → x → anchor.
    assert a[0].tolist() == [0.03125, 0.03125, 1.0, 1.0]
    assert a[1].tolist() == [0.03125, 0.03125, 1.0, 1.0]
    assert a[2].tolist() == [0.09375, 0.03125, 1.0, 1.0]  # next x
    assert a[32].tolist() == [0.03125, 0.09375, 1.0, 1.0]  # next row
    assert a[511].tolist() == [0.96875, 0.96875, 1.0, 1.0]
    assert all(a[i].tolist() == [0.0625, 0.0625, 1.0, 1.0] for i in range(512, 518))
    assert a[518].tolist() == [0.1875, 0.0625, 1.0, 1.0]
    assert a[895].tolist() == [0.9375, 0.9375, 1.0, 1.0]


def test_back_anchors_equal_front_anchors_normalized():
    assert torch.equal(generate_anchors(get_config("back").anchors), generate_anchors(get_config("short_range").anchors))


def test_full_range_anchor_layout():
    a = generate_anchors(get_config("full_range").anchors)
    assert a[0, :2].tolist() == pytest.approx([0.5 / 48, 0.5 / 48])
    assert a[1, :2].tolist() == pytest.approx([1.5 / 48, 0.5 / 48])
    assert a[48, :2].tolist() == pytest.approx([0.5 / 48, 1.5 / 48])


def test_anchor_scales_when_not_fixed():
    a = generate_anchors(AnchorOptions(128, 4, (8, 16, 16, 16), 0.1484375, 0.75, fixed_anchor_size=False))
    s1 = 0.1484375 + (0.75 - 0.1484375) / 3  # second layer's scale
    assert a[0, 2].item() == pytest.approx(0.1484375)
    assert a[1, 2].item() == pytest.approx(math.sqrt(0.1484375 * s1))  # interpolated scale
    assert a[517, 2].item() == pytest.approx(math.sqrt(0.75 * 1.0))  # last layer interpolates with 1.0


def test_decode_hand_computed():
    anchors = torch.tensor([[0.5, 0.5, 1.0, 1.0]])
    raw = torch.zeros(1, 16)
    raw[0, :4] = torch.tensor([12.8, -6.4, 64.0, 32.0])
    raw[0, 4:6] = torch.tensor([-32.0, 16.0])
    boxes, kps = decode_boxes(raw, anchors, 128.0)
    assert boxes[0].tolist() == pytest.approx([0.35, 0.325, 0.85, 0.575])
    assert kps[0, 0].tolist() == pytest.approx([0.25, 0.625])
    assert kps[0, 1].tolist() == pytest.approx([0.5, 0.5])


def test_box_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([1 / 7, 0.0, 0.0, 1.0])


def _kps(n):
    return torch.arange(n * 12, dtype=torch.float32).reshape(n, 6, 2)


def test_weighted_nms_blends_cluster_and_keeps_top_score():
    boxes = torch.tensor([[1.0, 0.0, 11.0, 10.0], [0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.6, 0.9, 0.7])
    kps = _kps(3)
    out = non_max_suppression(boxes, scores, kps, 0.3, "weighted")
    assert out.scores.tolist() == pytest.approx([0.9, 0.7])  # the top's own score, not the mean 0.75
    assert out.boxes[0].tolist() == pytest.approx([0.4, 0.0, 10.4, 10.0])  # (0*.9 + 1*.6)/1.5, (10*.9 + 11*.6)/1.5
    assert torch.allclose(out.keypoints[0], (kps[1] * 0.9 + kps[0] * 0.6) / 1.5)
    assert out.boxes[1].tolist() == [50.0, 50.0, 60.0, 60.0]


def test_nms_threshold_is_strict():
    boxes = torch.tensor([[0.0, 0.0, 3.0, 1.0], [1.0, 0.0, 4.0, 1.0]])  # IoU exactly 0.5
    scores = torch.tensor([0.9, 0.8])
    assert len(non_max_suppression(boxes, scores, _kps(2), 0.5).scores) == 2
    assert len(non_max_suppression(boxes, scores, _kps(2), 0.49).scores) == 1


def test_nms_degenerate_top_box_stops():
    boxes = torch.tensor([[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 10.0, 10.0]])  # the top one is empty
    out = non_max_suppression(boxes, torch.tensor([0.9, 0.8]), _kps(2))
    assert out.scores.tolist() == pytest.approx([0.9])  # output once, then MediaPipe stops


def test_hard_nms_keeps_top_box_unchanged():
    boxes = torch.tensor([[1.0, 0.0, 11.0, 10.0], [0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    out = non_max_suppression(boxes, torch.tensor([0.6, 0.9, 0.7]), _kps(3), 0.3, "hard")
    assert out.boxes.tolist() == [[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]]


def test_nms_empty_and_max_detections():
    out = non_max_suppression(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 6, 2))
    assert out.boxes.shape == (0, 4)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 6.0, 6.0], [9.0, 9.0, 10.0, 10.0]])
    out = non_max_suppression(boxes, torch.tensor([0.5, 0.9, 0.7]), _kps(3), max_detections=2)
    assert out.scores.tolist() == pytest.approx([0.9, 0.7])

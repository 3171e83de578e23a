"""TF-SAME padding, depth-to-space and the architectures' sizes."""

import pytest
import torch

from blazeface import create_model, list_models
from blazeface.nn import DepthToSpace, same_padding


def test_same_padding_hand_computed():
    assert same_padding(5, 2) == (1, 2)  # the 5×5 stride-2 stem
    assert same_padding(3, 2) == (0, 1)  # 3×3 stride-2 depthwise
    assert same_padding(3, 1) == (1, 1)
    assert same_padding(1, 1) == (0, 0)


def test_depth_to_space_is_tensorflow_dcr_order():
    # out[c, h*2 + i, w*2 + j] = in[(i*2 + j)*C + c, h, w]
    c = 2
    x = torch.arange(4 * c, dtype=torch.float32).reshape(1, 4 * c, 1, 1)
    y = DepthToSpace(2)(x)
    assert y.shape == (1, c, 2, 2)
    assert y[0, 0].tolist() == [[0.0, 2.0], [4.0, 6.0]]
    assert y[0, 1].tolist() == [[1.0, 3.0], [5.0, 7.0]]


@pytest.mark.parametrize("name,params", [("short_range", 101_390), ("back", 136_240), ("full_range", 514_069)])
def test_parameter_counts(name, params):
    model = create_model(name, pretrained=False)
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("name", list_models())
def test_forward_shapes_batched(name):
    model = create_model(name, pretrained=False)
    s = model.input_size
    reg, logits = model(torch.zeros(3, 3, s, s))
    assert reg.shape == (3, model.spec.num_anchors, 16)
    assert logits.shape == (3, model.spec.num_anchors, 1)

"""Cross-layer equalization of BlazeNet for int8: an exact float re-parametrization.

Inside every BlazeBlock a depthwise convolution feeds a 1×1 convolution with nothing in between
(no ReLU): ``pw(dw(x))``. Dividing depthwise channel ``c`` (weights and bias) by ``s_c`` and
multiplying the 1×1 convolution's input column ``c`` by ``s_c`` leaves the float function unchanged,
but moves range from the activation (quantized per tensor) into the weights (quantized per output
channel). Measured on the calibration images, ``s_c = sqrt(a_c / w_c)`` (``a_c`` the channel's
activation range, ``w_c`` the 1×1 column's weight range) equalizes both to ``sqrt(a_c w_c)``. Without it
one depthwise output of short range spans ±300 while most channels span ±4: per-tensor int8 erases them.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn.layers import BlazeBlock


def _pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.Conv2d]]:
    pairs = []
    for module in model.modules():
        if isinstance(module, BlazeBlock):
            pairs.append((module.dw1[-1], module.pw1))
            if module.double:
                pairs.append((module.dw2[-1], module.pw2))
    return pairs


@torch.no_grad()
def equalize(model: nn.Module, images: torch.Tensor, batch_size: int = 16, eps: float = 1e-6) -> nn.Module:
    """Equalize ``model`` in place (see the module docstring) with ranges measured on ``images [N, 3, S, S]``.

    Returns ``model``; its float outputs change only by rounding (about 1e-5 relative).
    """
    pairs = _pairs(model)
    ranges: dict[int, torch.Tensor] = {}
    hooks = []
    for i, (dw, _) in enumerate(pairs):
        def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor, i: int = i) -> None:
            r = out.detach().abs().amax(dim=(0, 2, 3))
            ranges[i] = r if i not in ranges else torch.maximum(ranges[i], r)
        hooks.append(dw.register_forward_hook(hook))
    try:
        was_training = model.training
        model.eval()
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size])
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    for i, (dw, pw) in enumerate(pairs):
        a = ranges[i].clamp(min=eps)
        w = pw.weight.abs().amax(dim=(0, 2, 3)).clamp(min=eps)
        s = torch.sqrt(a / w)
        dw.weight.div_(s.view(-1, 1, 1, 1))
        if dw.bias is not None:
            dw.bias.div_(s)
        pw.weight.mul_(s.view(1, -1, 1, 1))
    return model

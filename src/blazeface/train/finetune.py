"""Fine-tuning tools: backbone/head parameter groups, the L2-SP penalty toward the starting weights, and an
exponential moving average (EMA) of the weights.

* **Parameter groups.** The *heads* are each detection head's final 1×1 convolution (``net.regressors`` and
  ``net.classifiers``); everything else (stem, blocks, FPN) is the *backbone*, which can learn more slowly
  (``backbone_lr``) or be frozen for the first epochs.
* **L2-SP** (Li et al., "Explicit inductive bias for transfer learning", 2018): ``α/2 · Σ ||w − w₀||²`` over
  the trained weights, with ``w₀`` the weights training started from. Unlike weight decay (a pull toward 0)
  it keeps a fine-tuned network near the pretrained one, which is what a few dozen images can justify.
* **EMA**: ``ema ← d · ema + (1 − d) · w`` after every optimizer step, starting at the initial weights; the
  average is what gets saved and validated (it smooths the step-to-step noise of small batches).

The BlazeFace networks have no BatchNorm (it is folded into the convolutions), so freezing and averaging weights
need no care for running statistics.
"""

from __future__ import annotations

import torch

from ..nn.blazenet import BlazeNet


def head_parameters(net: BlazeNet) -> list[torch.nn.Parameter]:
    """The parameters of the detection heads (regressors and classifiers)."""
    return [p for m in (*net.regressors, *net.classifiers) for p in m.parameters()]


def backbone_parameters(net: BlazeNet) -> list[torch.nn.Parameter]:
    """Every parameter that is not a head's."""
    heads = {id(p) for p in head_parameters(net)}
    return [p for p in net.parameters() if id(p) not in heads]


def param_groups(net: BlazeNet, lr: float, backbone_lr: float = 1.0) -> list[dict]:
    """Optimizer groups: ``{"name": "backbone", lr: lr · backbone_lr}`` and ``{"name": "heads", lr: lr}``."""
    return [{"name": "backbone", "params": backbone_parameters(net), "lr": lr * backbone_lr},
            {"name": "heads", "params": head_parameters(net), "lr": lr}]


def start_weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the parameters (``w₀`` of :func:`l2sp_penalty`)."""
    return {k: p.detach().clone() for k, p in net.named_parameters()}


def l2sp_penalty(net: torch.nn.Module, start: dict[str, torch.Tensor]) -> torch.Tensor:
    """``Σ ||w − w₀||²`` over the parameters that are being trained (``requires_grad``)."""
    terms = [((p - start[k]) ** 2).sum() for k, p in net.named_parameters() if p.requires_grad]
    return torch.stack(terms).sum() if terms else torch.zeros(())


class WeightEMA:
    """Exponential moving average of a module's floating-point state (parameters and buffers)."""

    def __init__(self, net: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), not {decay}")
        self.decay = float(decay)
        self.state = {k: v.detach().clone() for k, v in net.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        """``ema ← decay · ema + (1 − decay) · w``."""
        for k, v in net.state_dict().items():
            if k in self.state:
                self.state[k].mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            self.state[k].copy_(v)

"""Quantization-aware fine-tuning for the int8 exports: ONNX Runtime's QDQ graph and PyTorch's own FX int8.

Post-training int8 moves the logits of small, near-threshold faces by ±0.15: enough to flip a face whose float
score sits near the threshold. Here the float network is fine-tuned while it *sees* ONNX Runtime's rounding,
then exported and quantized as usual (:func:`~blazeface.export.quantize.quantize_onnx`).

:func:`fake_quantize` wraps a network in the rounding of the QDQ graph that ``quantize_onnx`` writes:

- weights per output channel, symmetric, in ``[-64, 64]`` (ORT's int8 with ``reduce_range``); the regressor
  heads' weights in ``[-127, 127]`` (stored int8, computed in float); the classifier heads' stay float;
- activations uint8 per tensor, asymmetric, the range ORT's percentile calibrator picks (the 99.99th percentile:
  0.005 % cut on each side, clamped to include 0), at the tensors ORT quantizes: the network input, every
  convolution and residual sum, and the output of a ReLU in place of its input (ORT folds the ReLU into the
  range); max-pools and channel pads keep their input's rounding; the heads' outputs stay float.

:func:`qat_finetune_onnx` distils the float network into that fake-quantized copy on unlabeled images (the
float network's own outputs are the targets) and returns a float network with the fine-tuned weights.

:func:`qat_finetune_fx` does the same for PyTorch's FX int8 (:func:`~blazeface.export.quantize.quantize_torch_fx`)
on the graph ``prepare_fx`` returns, in place (:func:`fake_quantize_fx`): each activation observer becomes a fake
quantizer with the scale and zero point it calibrated (frozen while training), and every convolution that will run
int8 rounds its weights as ``convert_fx`` will. ``convert_fx`` then quantizes the fine-tuned weights on the grid they
were trained on.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils import parametrize

WEIGHT_QMAX = 64  # ORT's symmetric int8 weights with reduce_range
HEAD_WEIGHT_QMAX = 127  # the regressor heads' and float tail's int8-stored weights (_weights_only_int8)
ACTIVATION_PERCENTILE = 99.99  # quantize_onnx's default
TORCH_WEIGHT_QMIN = -128  # torch's default_per_channel_weight_observer: qint8, symmetric, scale = max|w| / 127.5


class WeightFakeQuant(nn.Module):
    """Parametrization: per-output-channel symmetric rounding of a convolution's weight ``[O, I, kh, kw]`` to the
    integers ``[qmin, qmax]`` (``qmin``: ``-qmax`` unless given), with scale ``max|w| / ((qmax - qmin) / 2)``."""

    def __init__(self, qmax: int, qmin: int | None = None) -> None:
        super().__init__()
        self.qmax = qmax
        self.qmin = -qmax if qmin is None else qmin

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale = (weight.detach().abs().amax(dim=(1, 2, 3)) / ((self.qmax - self.qmin) / 2)).clamp_min(1e-12)
        zero = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, self.qmin, self.qmax)


class ActivationFakeQuant(nn.Module):
    """uint8 per-tensor rounding with a calibrated range ``[low, high]`` (straight-through gradients).

    While ``observing`` it records the extreme values it sees and passes them through unchanged;
    :meth:`calibrate` then sets the range to the percentiles of all values seen, as ORT's calibrator does.
    """

    def __init__(self, min_percentile: float = ACTIVATION_PERCENTILE) -> None:
        super().__init__()
        self.max_cut = (100.0 - min_percentile) / 200.0
        self.register_buffer("low", torch.tensor(0.0))
        self.register_buffer("high", torch.tensor(0.0))
        self.observing = False
        self._reset()

    def _reset(self) -> None:
        self._seen = 0
        self._highs: list[torch.Tensor] = []
        self._lows: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            flat = x.detach().flatten().float()
            # the values beyond any percentile >= 99.99 of up to 64 such batches: exact quantiles for calibrate()
            m = min(flat.numel(), math.ceil(64 * self.max_cut * flat.numel()) + 1)
            self._seen += flat.numel()
            self._highs.append(flat.topk(m).values.cpu())
            self._lows.append((-flat).topk(m).values.neg().cpu())
            return x
        low, high = self.low.clamp(max=0.0), self.high.clamp(min=0.0)
        scale = ((high - low) / 255.0).clamp_min(1e-8)
        zero = torch.clamp(torch.round(-low / scale), 0, 255).to(torch.int32)
        return torch.fake_quantize_per_tensor_affine(x, scale.reshape(1), zero.reshape(1), 0, 255)

    def calibrate(self, percentile: float = ACTIVATION_PERCENTILE) -> None:
        """Set ``[low, high]`` from the recorded values (0.5·(100 − percentile) % cut on each side)."""
        if not self._seen:
            raise RuntimeError("no values observed: run the network with observing=True first")
        cut = (100.0 - percentile) / 200.0
        if cut > self.max_cut:
            raise ValueError(f"percentile {percentile} is below this quantizer's min_percentile {100 - 200 * self.max_cut}")
        k = max(1, int(round(cut * self._seen)))
        self.high.fill_(float(torch.cat(self._highs).topk(k).values[-1]))
        self.low.fill_(float(torch.cat(self._lows).neg().topk(k).values[-1].neg()))
        self._reset()


_QUANTIZED_CALLS = {operator.add, torch.add, F.relu, torch.relu, torch.cat, F.interpolate}
_RELUS = {F.relu, torch.relu}


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return (node.op == "call_function" and node.target in _RELUS) or (
        node.op == "call_module" and isinstance(modules[str(node.target)], nn.ReLU))


def _quantized_output(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "placeholder":
        return True
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], (nn.Conv2d, nn.ReLU))
    return node.op == "call_function" and node.target in _QUANTIZED_CALLS


def _is_head(qualname: str) -> bool:
    """``regressors.i`` / ``classifiers.i``: one detection head of a BlazeNet."""
    return qualname.startswith(("regressors.", "classifiers.")) and qualname.count(".") == 1


class _Tracer(fx.Tracer):
    """Traces down to convolutions; the heads (regressors, classifiers) stay one leaf each."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _is_head(qualname) or super().is_leaf_module(m, qualname)


_PASS_THROUGH = (nn.Identity, nn.ZeroPad2d)  # no node of their own in the exported ONNX graph


def _tail_nodes(graph: fx.Graph, modules: dict[str, nn.Module], heads: set[str], depth: int) -> set[fx.Node]:
    """The nodes up to ``depth`` steps upstream of the heads' inputs, counted as
    :func:`~blazeface.export.quantize.head_feeding_nodes` counts ONNX nodes (an ``nn.Identity`` is no node, and
    the exporter folds each ``nn.ZeroPad2d`` into the convolution after it)."""
    def producers(node: fx.Node) -> list[fx.Node]:
        out = []
        for a in node.all_input_nodes:
            while a.op == "call_module" and isinstance(modules[str(a.target)], _PASS_THROUGH):
                a = a.all_input_nodes[0]
            if a.op in ("call_module", "call_function", "call_method"):
                out.append(a)
        return out

    frontier = [p for n in graph.nodes if n.op == "call_module" and str(n.target) in heads for p in producers(n)]
    tail: set[fx.Node] = set()
    for _ in range(depth):
        upstream = []
        for node in frontier:
            if node not in tail:
                tail.add(node)
                upstream += producers(node)
        frontier = upstream
    return tail


def _runs_float(node: fx.Node, float_nodes: set[fx.Node], modules: dict[str, nn.Module]) -> bool:
    """``node`` is one of ``float_nodes``, or an identity or spatial pad (folded into the next convolution in
    ONNX) whose users all run float."""
    if node in float_nodes:
        return True
    return (node.op == "call_module" and isinstance(modules[str(node.target)], _PASS_THROUGH)
            and all(_runs_float(u, float_nodes, modules) for u in node.users))


def fake_quantize(net: nn.Module, float_tail: int = 0) -> fx.GraphModule:
    """A copy of ``net`` with ONNX Runtime's int8 rounding (see the module docstring); ranges still unset.

    ``float_tail``: the nodes that many steps upstream of the heads compute in float, as
    ``quantize_onnx(float_tail=...)`` leaves them (their convolutions keep int8-stored weights; a tensor between
    two of them is not rounded). Calibrate the ranges with :func:`calibrate_activations` before use. Gradients
    pass straight through the rounding, so the copy can be fine-tuned; its parameters are the float weights.
    """
    net = copy.deepcopy(net)
    graph = _Tracer().trace(net)
    gm = fx.GraphModule(net, graph)
    modules = dict(gm.named_modules())
    heads = {n for n in modules if _is_head(n)}
    float_nodes: set[fx.Node] = set()  # the heads and everything after them stay float
    for node in gm.graph.nodes:
        if (node.op == "call_module" and str(node.target) in heads) or any(a in float_nodes for a in node.all_input_nodes):
            float_nodes.add(node)
    tail = _tail_nodes(gm.graph, modules, heads, float_tail)
    tail_convs = {str(n.target) for n in tail if n.op == "call_module"}
    count = 0
    for node in list(gm.graph.nodes):
        if node in float_nodes or not _quantized_output(node, modules):
            continue
        if node in tail and all(_runs_float(u, tail | float_nodes, modules) for u in node.users):
            continue  # a float node feeding only float nodes: no rounding in between
        users = list(node.users)
        if len(users) == 1 and _is_relu(users[0], modules):
            continue  # ORT folds the ReLU into this tensor's range: the ReLU's output is quantized instead
        name = f"act_fq_{count}"
        count += 1
        gm.add_submodule(name, ActivationFakeQuant())
        with gm.graph.inserting_after(node):
            fq = gm.graph.call_module(name, (node,))
        node.replace_all_uses_with(fq, delete_user_cb=lambda user, fq=fq: user is not fq)
    gm.graph.lint()
    gm.recompile()
    for name, module in gm.named_modules():
        if isinstance(module, nn.Conv2d) and not name.startswith("classifiers."):  # float weights in the file
            stored_only = name in tail_convs or any(name.startswith(h + ".") for h in heads)
            parametrize.register_parametrization(module, "weight",
                                                 WeightFakeQuant(HEAD_WEIGHT_QMAX if stored_only else WEIGHT_QMAX))
    return gm


def activation_quantizers(model: nn.Module) -> list[ActivationFakeQuant]:
    return [m for m in model.modules() if isinstance(m, ActivationFakeQuant)]


@torch.no_grad()
def run_batches(model: nn.Module, images: torch.Tensor, batch_size: int = 16) -> None:
    """Run ``model`` in eval mode on ``images [N, 3, S, S]`` in batches, outputs discarded (what calibration needs:
    the observers see every image); the model's training mode is restored."""
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size])
    finally:
        model.train(was_training)


def calibrate_activations(model: nn.Module, images: torch.Tensor, percentile: float = ACTIVATION_PERCENTILE,
                          batch_size: int = 16) -> None:
    """Set every activation range of a :func:`fake_quantize` model from ``images [N, 3, S, S]``."""
    quantizers = activation_quantizers(model)
    for q in quantizers:
        q.observing = True
    try:
        run_batches(model, images, batch_size)
    finally:
        for q in quantizers:
            q.observing = False
    for q in quantizers:
        q.calibrate(percentile)


def float_network(model: fx.GraphModule, template: nn.Module) -> nn.Module:
    """``template`` (the float network ``model`` was made from) with ``model``'s fine-tuned float weights."""
    net = copy.deepcopy(template)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("parametrizations.weight.original"):
            key = key.replace("parametrizations.weight.original", "weight")
        state[key] = value
    expected = net.state_dict().keys()
    net.load_state_dict({k: v for k, v in state.items() if k in expected})
    return net


def distillation_loss(student: tuple[torch.Tensor, torch.Tensor], teacher: tuple[torch.Tensor, torch.Tensor],
                      box_scale: float = 1.0) -> torch.Tensor:
    """The student's distance to the float network's outputs ``(regressors [B, A, 16], logits [B, A, 1])``.

    Logits: L1 on values clamped to ±20, weighted 11× more near 0 (the faces a threshold can flip) than far; regressors
    (input pixels): L1 weighted by the float score, times ``box_scale``.
    """
    reg, log = student
    t_reg, t_log = teacher
    t_log = t_log.clamp(-20, 20)
    near = 0.1 + torch.exp(-0.5 * (t_log / 3.0) ** 2)
    logit_loss = (near * (log.clamp(-20, 20) - t_log).abs()).mean()
    score = torch.sigmoid(t_log)
    box_loss = (score * (reg - t_reg).abs()).sum() / score.sum().clamp_min(1.0) / reg.shape[-1]
    return logit_loss + box_scale * box_loss


def jitter(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random mirror and brightness/contrast of a batch in [-1, 1] (the same for every pixel of an image)."""
    b = images.shape[0]
    flip = torch.rand(b, generator=generator) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    gain = 1.0 + 0.3 * (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1)
    bias = 0.2 * (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1)
    return (x * gain + bias).clamp(-1, 1)


def _distil(student: nn.Module, teacher: nn.Module, images: torch.Tensor, steps: int, lr: float, batch_size: int,
            seed: int, box_scale: float, log: Callable[[int, float], None] | None,
            recalibrate_every: int = 0, recalibrate: Callable[[], None] | None = None) -> None:
    """Fine-tune ``student`` toward ``teacher``'s outputs on jittered ``images`` (Adam, cosine schedule), calling
    ``recalibrate()`` every ``recalibrate_every`` steps (not at step 0: the caller calibrates first); ``student`` is
    left in eval mode."""
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    gen = torch.Generator().manual_seed(seed)
    student.train()
    for step in range(steps):
        if recalibrate is not None and recalibrate_every and step and step % recalibrate_every == 0:
            recalibrate()
        x = jitter(images[torch.randint(len(images), (batch_size,), generator=gen)], gen)
        with torch.no_grad():
            target = teacher(x)
        loss = distillation_loss(student(x), target, box_scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log is not None and step % 25 == 0:
            log(step, float(loss.detach()))
    student.eval()


def qat_finetune_onnx(net: nn.Module, images: torch.Tensor, steps: int = 600, lr: float = 1e-4,
                      batch_size: int = 16, seed: int = 0, percentile: float = ACTIVATION_PERCENTILE,
                      recalibrate_every: int = 100, box_scale: float = 1.0, float_tail: int = 0,
                      log: Callable[[int, float], None] | None = None) -> nn.Module:
    """Fine-tune ``net`` (float, already equalized) under ONNX Runtime's int8 rounding; returns a float copy.

    ``images [N, 3, S, S]`` in [-1, 1] (e.g. :func:`~blazeface.export.quantize.calibration_images`) are the
    training inputs, jittered; the targets are ``net``'s own float outputs (:func:`distillation_loss`), so no
    labels are needed. Activation ranges are calibrated on ``images`` first and again every
    ``recalibrate_every`` steps. ``float_tail``: as in :func:`fake_quantize` (the model's
    ``int8_float_tail``). ``log(step, loss)`` is called every 25 steps.
    """
    teacher = copy.deepcopy(net).eval()
    student = fake_quantize(net, float_tail)

    def calibrate() -> None:
        calibrate_activations(student, images, percentile)

    calibrate()
    _distil(student, teacher, images, steps, lr, batch_size, seed, box_scale, log, recalibrate_every, calibrate)
    return float_network(student, net).eval()


def _observer_nodes(prepared: fx.GraphModule) -> list[fx.Node]:
    from torch.ao.quantization.fx.utils import _is_activation_post_process

    return [n for n in prepared.graph.nodes
            if n.op == "call_module" and _is_activation_post_process(prepared.get_submodule(str(n.target)))]


def input_observer(prepared: fx.GraphModule) -> str | None:
    """The name of the observer that quantizes the network input of a ``prepare_fx`` graph (its input reaches the
    placeholder through zero pads only), or None."""
    for node in _observer_nodes(prepared):
        source = node.args[0]
        while isinstance(source, fx.Node) and source.op == "call_module" and isinstance(
                prepared.get_submodule(str(source.target)), nn.ZeroPad2d):
            source = source.args[0]
        if isinstance(source, fx.Node) and source.op == "placeholder":
            return str(node.target)
    return None


def pooled_observers(prepared: fx.GraphModule) -> list[str]:
    """The observers of a ``prepare_fx`` graph that ``convert_fx`` drops: those right after a max pool that reads an
    observed (int8) tensor. The converted graph pools that int8 tensor and keeps its scale and zero point
    (:class:`~blazeface.export.quantize._FloatMaxPool`); a max pool's values are its input's, already on that grid."""
    nodes = _observer_nodes(prepared)
    observers = set(nodes)
    names = []
    for node in nodes:
        pool = node.args[0]
        if (isinstance(pool, fx.Node) and pool.op == "call_module"
                and isinstance(prepared.get_submodule(str(pool.target)), nn.MaxPool2d)
                and pool.args[0] in observers):
            names.append(str(node.target))
    return names


def int8_convolutions(prepared: fx.GraphModule) -> list[nn.Conv2d]:
    """The convolutions of a ``prepare_fx`` graph that ``convert_fx`` makes int8: those of every module node with a
    qconfig (a fused module's too)."""
    qconfigs = prepared.meta["_observed_graph_module_attrs"].node_name_to_qconfig
    convs: list[nn.Conv2d] = []
    for node in prepared.graph.nodes:
        if node.op == "call_module" and qconfigs.get(node.name) is not None:
            convs += [m for m in prepared.get_submodule(str(node.target)).modules() if isinstance(m, nn.Conv2d)]
    return convs


def fake_quantize_fx(prepared: fx.GraphModule, images: torch.Tensor, new_observer: Callable[[], nn.Module],
                     exact_input: bool = True) -> None:
    """Make a ``prepare_fx`` graph compute PyTorch's int8 arithmetic in float, in place (differentiable).

    Every activation observer becomes a ``FakeQuantize`` around a fresh ``new_observer()`` (the qconfig's activation
    observer) calibrated on ``images [N, 3, S, S]`` and then frozen (``convert_fx`` reads that calibration), and every
    convolution :func:`int8_convolutions` finds rounds its weights as ``convert_fx`` will (per output channel,
    symmetric, ``[-128, 127]``, scale ``max|w| / 127.5``). ``exact_input``: the input quantizer passes values through
    (``exact_pixel_input`` will quantize pixel inputs without error), and so do the observers ``convert_fx`` drops
    after a max pool of an int8 tensor (:func:`pooled_observers`). :func:`unfake_quantize_fx` undoes the weights'
    rounding before ``convert_fx``.
    """
    from torch.ao.quantization import FakeQuantize

    observers = {str(n.target): new_observer() for n in _observer_nodes(prepared)}
    for name, observer in observers.items():
        _set_submodule(prepared, name, observer)
    run_batches(prepared, images)
    passed = set(pooled_observers(prepared))
    if exact_input and (input_name := input_observer(prepared)) is not None:
        passed.add(input_name)
    for name, observer in observers.items():
        fq = FakeQuantize(observer=lambda **_: observer)
        scale, zero_point = observer.calculate_qparams()
        fq.scale.resize_(scale.shape).copy_(scale)
        fq.zero_point.resize_(zero_point.shape).copy_(zero_point)
        fq.disable_observer()
        if name in passed:
            fq.disable_fake_quant()
        _set_submodule(prepared, name, fq)
    for conv in int8_convolutions(prepared):
        parametrize.register_parametrization(conv, "weight", WeightFakeQuant(127, TORCH_WEIGHT_QMIN))


def unfake_quantize_fx(prepared: fx.GraphModule) -> None:
    """Drop :func:`fake_quantize_fx`'s weight rounding, in place: the convolutions keep their float weights."""
    for module in prepared.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)


def qat_finetune_fx(prepared: fx.GraphModule, teacher: nn.Module, images: torch.Tensor,
                    new_observer: Callable[[], nn.Module], steps: int = 100, lr: float = 1e-4, batch_size: int = 16,
                    seeds: Sequence[int] = (0,), box_scale: float = 1.0, exact_input: bool = True,
                    log: Callable[[int, float], None] | None = None) -> None:
    """Fine-tune a ``prepare_fx`` graph in place under PyTorch's int8 rounding (:func:`fake_quantize_fx`), ready
    for ``convert_fx``.

    ``teacher``: the float network ``prepared`` was made from (the targets, :func:`distillation_loss`); ``images
    [N, 3, S, S]`` in [-1, 1]: the calibration images, jittered for training. The activation ranges stay those of the
    first calibration: calibrating again during training moved the histogram observer's ranges enough to raise the
    loss (short range, at step 100: 0.31 to 0.43, in one run to 3.8, after which training diverged).
    ``seeds``: one fine-tuning per seed of the batch sampling, each from the same calibrated start; more than one and
    their weights are averaged (:func:`average_parameters`), which varies less from seed to seed than one run does
    (full range on wider_val_dev, ``benchmarks/RESULTS.md``). ``log(step, loss)`` is called every 25 steps.
    """
    if not seeds:
        raise ValueError("qat_finetune_fx needs at least one seed")
    fake_quantize_fx(prepared, images, new_observer, exact_input)
    runs = [copy.deepcopy(prepared) for _ in seeds[1:]]
    for run, seed in zip([prepared, *runs], seeds):
        _distil(run, teacher, images, steps, lr, batch_size, seed, box_scale, log)
    if runs:
        average_parameters(prepared, runs)
    unfake_quantize_fx(prepared)


def average_parameters(target: nn.Module, others: Sequence[nn.Module]) -> None:
    """Set every parameter of ``target`` to its mean over ``target`` and ``others`` (same architecture), in place.

    Buffers (observer ranges, fake-quantization scales) stay ``target``'s: the runs share them, and an average of
    equal floats need not equal them to the last bit.
    """
    named = [dict(m.named_parameters()) for m in others]
    with torch.no_grad():
        for name, param in target.named_parameters():
            param.copy_(torch.stack([param, *(n[name] for n in named)]).mean(0))


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)

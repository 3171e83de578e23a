"""Quantization-aware fine-tuning for ONNX Runtime's int8 (issue 6): the fake-quantized network rounds where
ONNX Runtime's QDQ graph does, by hand-checked numbers and against onnxruntime itself; fine-tuning brings its
outputs closer to float."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch import nn

from blazeface import create_model
from blazeface.export.qat import (ActivationFakeQuant, WeightFakeQuant, activation_quantizers, calibrate_activations,
                                  distillation_loss, fake_quantize, float_network, qat_finetune_onnx)
from blazeface.export.quantize import calibration_images, prepare_for_int8

from .conftest import shared


@pytest.fixture(scope="module")
def short_range():
    net = create_model("short_range").eval()
    images = calibration_images(None, 128)
    return prepare_for_int8(net, images), images


def test_weight_rounding_per_output_channel():
    w = torch.tensor([[0.5, -1.0, 0.26], [0.01, 0.02, -0.04]]).view(2, 3, 1, 1)
    q = WeightFakeQuant(64)(w).view(2, 3)
    # channel 0: step 1/64 (max |w| = 1.0 → 64); 0.26·64 = 16.64 → 17; channel 1: step 0.04/64
    assert torch.allclose(q[0], torch.tensor([0.5, -1.0, 17 / 64]))
    assert torch.allclose(q[1], torch.tensor([16, 32, -64]) * (0.04 / 64))


def test_activation_range_is_the_percentile_of_all_values_seen():
    fq = ActivationFakeQuant(min_percentile=99.0)
    fq.observing = True
    values = torch.arange(10000, dtype=torch.float32) - 2000  # -2000 … 7999, in two batches
    fq(values[:5000].view(1, 1, 50, 100))
    fq(values[5000:].view(1, 1, 50, 100))
    fq.observing = False
    fq.calibrate(99.0)  # 0.5 % = 50 values cut on each side
    assert float(fq.low) == -1951.0 and float(fq.high) == 7950.0
    # uint8 rounding over [-1951, 7950]: step 9901/255, zero point round(1951/step) = 50
    step = 9901 / 255
    x = torch.tensor([0.0, 100.0, 9000.0, -3000.0])
    expected = (torch.tensor([50, 53, 255, 0]) - 50) * step
    assert torch.allclose(fq(x), expected, rtol=1e-5)


def test_fake_quantized_short_range_rounds_where_onnx_runtime_does(short_range):
    """Quantized tensors, counted by hand: the input, the stem's ReLU, and per BlazeBlock (16, all single) the
    depthwise output, the 1×1 output and the residual ReLU: 2 + 16 × 3. The heads and outputs stay float."""
    net, _ = short_range
    fq = fake_quantize(net)
    assert len(activation_quantizers(fq)) == 2 + 16 * 3
    weights = {n: m for n, m in fq.named_modules() if isinstance(m, WeightFakeQuant)}
    assert len(weights) == 1 + 16 * 2 + 2  # the 2 classifier heads keep float weights (none)
    assert sum(m.qmax == 127 for m in weights.values()) == 2  # the regressor heads: int8-stored weights


def test_fake_quantized_errors_track_onnx_runtime_int8(short_range, tmp_path):
    """On the seed images, the emulated int8 logits move from float as onnxruntime's int8 file does:
    correlated errors of the same size and sign of bias (at anchors near faces)."""
    ort = pytest.importorskip("onnxruntime")
    from blazeface.export import export_model

    net, images = short_range
    fq = fake_quantize(net)
    calibrate_activations(fq, images)
    path = export_model("short_range", "onnx", tmp_path / "q.onnx", int8=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    test = calibration_images(shared("seed_images"), 128)
    with torch.no_grad():
        _, float_logits = net(test)
        _, fq_logits = fq(test)
    _, ort_logits = session.run(None, {"input": test.numpy()})
    near = (float_logits > -2).numpy()
    emulated = (fq_logits - float_logits).numpy()[near]
    real = ort_logits[near] - float_logits.numpy()[near]
    assert near.sum() > 500
    assert np.corrcoef(emulated, real)[0, 1] > 0.5
    assert 0.7 < emulated.std() / real.std() < 1.4
    assert np.sign(emulated.mean()) == np.sign(real.mean())


def test_float_network_takes_the_fine_tuned_weights(short_range):
    net, _ = short_range
    fq = fake_quantize(net)
    with torch.no_grad():
        fq.get_submodule("blocks.3.pw1").parametrizations.weight.original.add_(1.0)
    out = float_network(fq, net)
    assert torch.equal(out.blocks[3].pw1.weight, net.blocks[3].pw1.weight + 1.0)
    assert torch.equal(out.stem[-1].weight, net.stem[-1].weight)
    assert not any(isinstance(m, (WeightFakeQuant, ActivationFakeQuant)) for m in out.modules())
    assert type(out) is type(net) and isinstance(out, nn.Module)


def test_qat_brings_int8_closer_to_float_on_unseen_images(short_range):
    """40 steps on the calibration images lower the emulated int8 network's distance to float on the seed
    images, and leave the float network nearly unchanged."""
    net, images = short_range
    torch.manual_seed(0)
    tuned = qat_finetune_onnx(net, images, steps=40, lr=1e-4)
    test = calibration_images(shared("seed_images"), 128)

    def int8_distance(model: nn.Module) -> float:
        fq = fake_quantize(model)
        calibrate_activations(fq, images)
        with torch.no_grad():
            return float(distillation_loss(fq(test), net(test)))

    before, after = int8_distance(net), int8_distance(tuned)
    assert after < 0.95 * before
    with torch.no_grad():
        _, logits0 = net(test)
        _, logits1 = tuned(test)
    near = logits0 > 0
    assert float((logits1 - logits0)[near].abs().mean()) < 0.5


def test_export_with_qat_steps_records_them_and_finds_the_example_faces(tmp_path):
    pytest.importorskip("onnxruntime")
    from blazeface import FaceDetector
    from blazeface.export import export_model

    from .conftest import EXAMPLES

    path = export_model("short_range", "onnx", tmp_path / "qat.onnx", int8=True, qat_steps=5)
    from blazeface.inference import load_backend

    assert load_backend(path).metadata["quantization"]["qat_steps"] == 5
    det = FaceDetector(str(path), device="cpu")
    photos = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".png", ".jpg"))
    assert [len(r) for r in det(photos)] == [len(r) for r in FaceDetector("short_range", device="cpu")(photos)]


def test_onnx_int8_runs_the_models_default_qat_steps_and_the_cli_says_so(tmp_path, monkeypatch, capsys):
    """A model's ``int8_qat_steps`` (none ships one above 0 since back's longer float tail made post-training int8
    enough; here back with 300) runs in its ONNX int8 export unless told otherwise, with its float tail, and is
    recorded; other formats run none, and ``--qat-steps 0`` skips them."""
    pytest.importorskip("onnxruntime")
    import dataclasses

    from blazeface import cli, get_config, registry
    from blazeface.export import default_qat_steps, qat
    from blazeface.inference import load_backend

    from .conftest import EXAMPLES

    assert all(get_config(m).int8_qat_steps == 0 for m in registry.list_models())
    monkeypatch.setitem(registry._MODELS, "back", dataclasses.replace(get_config("back"), int8_qat_steps=300))
    calls: list[int] = []

    def fake_finetune(net, images, steps, float_tail):  # the real loop takes minutes; its effect is tested above
        calls.append(steps)
        assert float_tail == get_config("back").int8_float_tail
        return net

    monkeypatch.setattr(qat, "qat_finetune_onnx", fake_finetune)
    (tmp_path / "calib").mkdir()  # one photo (16 augmented inputs) keeps the calibration short
    shutil.copy(EXAMPLES / "astronaut.png", tmp_path / "calib")
    assert cli.main(["export", "back", "--int8", "--calibration", str(tmp_path / "calib"),
                     "-o", str(tmp_path / "back.onnx")]) == 0
    assert calls == [300]
    assert load_backend(tmp_path / "back.onnx").metadata["quantization"]["qat_steps"] == 300
    assert "300 steps of quantization-aware fine-tuning" in capsys.readouterr().err
    assert [default_qat_steps(m, f, i) for m, f, i in [("back", "onnx", True), ("back", "tflite", True),
                                                      ("back", "onnx", False), ("short_range", "onnx", True)]] == [
        300, 0, 0, 0]
    assert cli.main(["export", "back", "--int8", "--qat-steps", "0", "--calibration", str(tmp_path / "calib"),
                     "-o", str(tmp_path / "back0.onnx")]) == 0
    assert calls == [300] and "quantization-aware" not in capsys.readouterr().err


@pytest.mark.parametrize(("kwargs", "message"), [({"qat_steps": 10}, "needs int8=True"),
                                                  ({"qat_steps": -1, "int8": True}, "must be >= 0")])
def test_export_rejects_bad_qat_steps(tmp_path, kwargs, message):
    from blazeface.export import export_model

    with pytest.raises(ValueError, match=message):
        export_model("short_range", "onnx", tmp_path / "x.onnx", **kwargs)


@pytest.mark.parametrize("model", ["short_range", "back", "full_range", "full_range_sparse"])
def test_float_tail_counts_the_nodes_the_onnx_quantizer_leaves_float(model):
    """``fake_quantize(float_tail=d)`` leaves float the nodes ``quantize_onnx(float_tail=d)`` excludes: counted on
    the exported ONNX graph itself (:func:`head_feeding_nodes`), for every depth up to 7."""
    pytest.importorskip("onnx")
    from torch import fx

    from blazeface.export.onnx_export import export_raw_onnx
    from blazeface.export.qat import _is_head, _tail_nodes, _Tracer
    from blazeface.export.quantize import head_feeding_nodes

    net = create_model(model).eval()
    onnx_model = export_raw_onnx(net, net.input_size)
    gm = fx.GraphModule(net, _Tracer().trace(net))
    modules = dict(gm.named_modules())
    heads = {n for n in modules if _is_head(n)}
    for depth in range(1, 8):
        assert len(_tail_nodes(gm.graph, modules, heads, depth)) == len(head_feeding_nodes(onnx_model, depth)), depth


def test_float_tail_drops_the_rounding_between_float_nodes():
    """Back with 6 float nodes (``float_tail=6``), counted by hand: 6 steps up from the heads' inputs reach
    blocks 29-31 (their depthwise and 1×1 convolutions, residual sums and ReLUs) and block 28's ReLU. Nine
    tensors there feed only float nodes and lose their rounding: the ReLUs of blocks 28-31, the depthwise outputs
    of blocks 29-31 and the 1×1 outputs of blocks 29-30 (block 31's folds into its ReLU). The six convolutions get
    the int8-stored weights' rounding ([-127, 127]) like the 2 regressor head convolutions."""
    net = create_model("back").eval()
    plain, tail = fake_quantize(net), fake_quantize(net, float_tail=6)
    assert len(activation_quantizers(plain)) - len(activation_quantizers(tail)) == 9
    stored = lambda m: sum(w.qmax == 127 for w in m.modules() if isinstance(w, WeightFakeQuant))  # noqa: E731
    assert stored(plain) == 2 and stored(tail) == 2 + 6


# ------------------------------------------------------------------------------------------------
# PyTorch's own FX int8 (the TorchScript int8 export)
# ------------------------------------------------------------------------------------------------
def _fx_errors(got: tuple[torch.Tensor, torch.Tensor], ref: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    """(std of the logit error at anchors where float's logit > -2, score-weighted mean box error in pixels)."""
    near = ref[1] > -2
    weight = torch.sigmoid(ref[1])
    box = float(((got[0] - ref[0]).abs() * weight).sum() / weight.sum() / got[0].shape[-1])
    return float((got[1] - ref[1])[near].std()), box


def test_fx_fake_quantized_network_computes_pytorch_int8():
    """The fake-quantized ``prepare_fx`` graph moves from float as the converted int8 kernels do (seed images): errors
    of the same size, strongly correlated, and closer to the real int8 than the real int8 is to float. Measured:
    logit error std 0.136 emulated against 0.133 real, correlation 0.89, emulated-to-real 0.064; box error 0.43 px
    either way, emulated-to-real 0.24 (what remains: ties in rounding and the padded border of the exact input).
    Without the weights' rounding the emulated-to-real box error was 0.45 px, more than int8's own."""
    from blazeface.export.qat import fake_quantize_fx, unfake_quantize_fx
    from blazeface.export.quantize import (TORCH_INT8_ENGINE, convert_torch_fx, prepare_torch_fx,
                                           torch_fx_qconfig)
    from blazeface.inference.files import quantized_engine
    from torch.ao.quantization import FakeQuantize
    from torch.nn.utils import parametrize

    images = calibration_images(None, 128)
    test = calibration_images(shared("seed_images"), 128)
    prepared, float_net = prepare_torch_fx(create_model("short_range").eval(), images)
    fake_quantize_fx(prepared, images, torch_fx_qconfig().activation)
    rounded = [m for m in prepared.modules() if parametrize.is_parametrized(m, "weight")]
    assert len(rounded) == 1 + 16 * 2  # the stem and each block's depthwise and 1x1 convolutions; heads float
    with torch.no_grad():
        ref = float_net(test)
        emulated = prepared(test)
    unfake_quantize_fx(prepared)
    assert not any(parametrize.is_parametrized(m) for m in prepared.modules())
    int8 = convert_torch_fx(prepared)
    assert sum(callable(getattr(m, "weight", None)) for m in int8.modules()) == len(rounded)
    assert not any(isinstance(m, FakeQuantize) for m in int8.modules())
    with torch.no_grad(), quantized_engine(TORCH_INT8_ENGINE):
        real = int8(test)
    (e_std, e_box), (r_std, r_box), (d_std, d_box) = _fx_errors(emulated, ref), _fx_errors(real, ref), _fx_errors(emulated, real)
    assert 0.8 < e_std / r_std < 1.25 and 0.8 < e_box / r_box < 1.25
    near = ref[1] > -2
    assert float(torch.corrcoef(torch.stack([(emulated[1] - ref[1])[near], (real[1] - ref[1])[near]]))[0, 1]) > 0.75
    assert d_std < 0.7 * r_std and d_box < 0.75 * r_box


def test_fx_qat_brings_pytorch_int8_closer_to_float_on_unseen_images():
    """40 steps on the calibration images (examples/) lower the real int8 network's box error on the seed images
    (measured 0.43 -> 0.33 px) without raising its logit error (0.133 -> 0.124)."""
    from blazeface.export.quantize import TORCH_INT8_ENGINE, quantize_torch_fx
    from blazeface.inference.files import quantized_engine

    images = calibration_images(None, 128)
    test = calibration_images(shared("seed_images"), 128)
    net = create_model("short_range").eval()
    with torch.no_grad():
        ref = net(test)
    losses: list[float] = []
    errors = {}
    for steps in (0, 40):
        q = quantize_torch_fx(create_model("short_range").eval(), images, qat_steps=steps,
                              qat_log=lambda step, loss: losses.append(loss))
        with torch.no_grad(), quantized_engine(TORCH_INT8_ENGINE):
            errors[steps] = _fx_errors(q(test), ref)
    assert len(losses) == 2  # steps 0 and 25 of the second run
    assert errors[40][1] < 0.85 * errors[0][1]
    assert errors[40][0] < 1.02 * errors[0][0]


def test_fx_qat_with_several_seeds_averages_the_weights_of_one_run_per_seed():
    """``seeds=(1, 2)`` gives the mean of the weights that ``seeds=(1,)`` and ``seeds=(2,)`` give from the same
    calibrated start; the runs differ (else the mean says nothing) and the observers' ranges stay the first run's."""
    from blazeface.export.qat import qat_finetune_fx
    from blazeface.export.quantize import prepare_torch_fx, torch_fx_qconfig

    images = calibration_images(None, 128)[:24]
    runs = {}
    for seeds in ((1,), (2,), (1, 2)):
        prepared, float_net = prepare_torch_fx(create_model("short_range").eval(), images)
        qat_finetune_fx(prepared, float_net, images, torch_fx_qconfig().activation, steps=3, seeds=seeds)
        runs[seeds] = prepared.state_dict()
    params = [k for k, v in runs[(1,)].items() if k.endswith("weight") and v.is_floating_point()]
    assert len(params) > 30
    moved = max(float((runs[(1,)][k] - runs[(2,)][k]).abs().max()) for k in params)
    assert moved > 1e-5
    for k in params:
        torch.testing.assert_close(runs[(1, 2)][k], (runs[(1,)][k] + runs[(2,)][k]) / 2, rtol=0, atol=1e-6)
    ranges = [k for k in runs[(1,)] if k.endswith(("min_val", "max_val"))]
    assert ranges and all(torch.equal(runs[(1, 2)][k], runs[(1,)][k]) for k in ranges)
    with pytest.raises(ValueError, match="at least one seed"):
        qat_finetune_fx(prepared, float_net, images, torch_fx_qconfig().activation, steps=1, seeds=())


def test_torchscript_int8_fine_tunes_under_pytorch_rounding_by_default(tmp_path, monkeypatch, capsys):
    """TorchScript int8 runs the model's ``int8_torch_qat_steps`` (short range: 100) in ``quantize_torch_fx``, never
    the ONNX Runtime emulation; the CLI says so, the file records them, and ``--qat-steps 0`` skips them."""
    from blazeface import FaceDetector, cli, get_config
    from blazeface.export import default_qat_steps, qat, quantize
    from blazeface.inference import load_backend

    from .conftest import EXAMPLES

    assert get_config("short_range").int8_torch_qat_steps == 100
    assert [default_qat_steps("short_range", f, i) for f, i in [("torchscript", True), ("torchscript", False),
                                                                ("onnx", True), ("tflite", True)]] == [100, 0, 0, 0]

    def no_onnx_emulation(*args, **kwargs):
        raise AssertionError("qat_finetune_onnx ran for a TorchScript export")

    monkeypatch.setattr(qat, "qat_finetune_onnx", no_onnx_emulation)
    real = quantize.qat_finetune_fx
    calls: list[int] = []

    def short_finetune(prepared, teacher, images, new_observer, steps, **kwargs):  # 100 steps take 30 s; 5 here
        calls.append(steps)
        real(prepared, teacher, images, new_observer, steps=5, **kwargs)

    monkeypatch.setattr(quantize, "qat_finetune_fx", short_finetune)
    out = tmp_path / "short.pt"
    assert cli.main(["export", "short_range", "--int8", "-o", str(out)]) == 0
    assert calls == [100]
    assert "100 steps of quantization-aware fine-tuning" in capsys.readouterr().err
    assert load_backend(out).metadata["quantization"]["qat_steps"] == 100
    photos = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".png", ".jpg"))
    got, want = FaceDetector(str(out), device="cpu")(photos), FaceDetector("short_range", device="cpu")(photos)
    assert [len(r) for r in got] == [len(r) for r in want]
    assert cli.main(["export", "short_range", "--int8", "--qat-steps", "0", "-o", str(tmp_path / "ptq.pt")]) == 0
    assert calls == [100] and "qat_steps" not in load_backend(tmp_path / "ptq.pt").metadata["quantization"]


def test_fx_fake_quantization_keeps_the_grid_of_a_pooled_int8_tensor():
    """back's ``blocks.7`` max pool reads an int8 tensor: ``convert_fx`` pools it in int8 and keeps its scale and zero
    point, dropping the observer ``prepare_fx`` put after the pool. The fake-quantized copy does not round there either,
    though that observer's own range would move the pooled values."""
    from blazeface.export.qat import fake_quantize_fx, pooled_observers, unfake_quantize_fx
    from blazeface.export.quantize import (TORCH_INT8_ENGINE, convert_torch_fx, prepare_torch_fx,
                                           torch_fx_qconfig)
    from blazeface.inference.files import quantized_engine

    images = calibration_images(None, 256)[:8]
    prepared, _ = prepare_torch_fx(create_model("back").eval(), images)
    names = pooled_observers(prepared)
    assert len(names) == 1
    pool_name = next(str(n.args[0].target) for n in prepared.graph.nodes if str(n.target) == names[0])
    assert pool_name == "blocks.7.pool"
    fake_quantize_fx(prepared, images, torch_fx_qconfig().activation)
    pooled: list[torch.Tensor] = []
    handle = prepared.get_submodule(pool_name).register_forward_hook(lambda m, i, o: pooled.append(o))
    with torch.no_grad():
        prepared(images[:2])
    handle.remove()
    fq = prepared.get_submodule(names[0])
    assert torch.equal(fq(pooled[0]), pooled[0])
    own_grid = torch.fake_quantize_per_tensor_affine(pooled[0], float(fq.scale), int(fq.zero_point), fq.quant_min,
                                                     fq.quant_max)
    assert (own_grid - pooled[0]).abs().max() > 1e-3
    unfake_quantize_fx(prepared)
    int8 = convert_torch_fx(prepared)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    # cloned: the fused residual convolution after the pool writes its sum into the pooled tensor, in place
    int8.get_submodule(pool_name).register_forward_hook(lambda m, i, o: seen.append((i[0].clone(), o.clone())))
    with torch.no_grad(), quantized_engine(TORCH_INT8_ENGINE):
        int8(images[:2])
    (x, y), = seen
    assert x.is_quantized and y.is_quantized
    assert (y.q_scale(), y.q_zero_point()) == (x.q_scale(), x.q_zero_point())

"""Export (issue 6): exported files agree with PyTorch, int8 finds the same faces, plain onnxruntime
post-processing gives the same boxes, bad files give clear errors. TFLite export runs when the
``tflite-export`` extra (litert-torch, large) is installed; the TFLite backend is always tested on
MediaPipe's own files."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from blazeface import FaceDetector, create_model, get_config
from blazeface.inference import ModelFileError, load_backend
from blazeface.cli import main
from blazeface.export import export_model
from blazeface.export.quantize import cpu_has_vnni
from blazeface.io import read_image
from blazeface.ops import box_iou
from blazeface.preprocess import letterbox

from .conftest import EXAMPLES, shared, tflite_model

SEEDS = ["1face.png", "3faces.png", "4faces.png"]


def _examples():
    return sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".png", ".jpg"))


def _seeds():
    return [shared("seed_images", n) for n in SEEDS]


def _inputs(size, n_random=1):
    """Random inputs plus the letterboxed examples, [B, 3, S, S]."""
    rng = np.random.default_rng(0)
    real = [letterbox(torch.from_numpy(read_image(p).copy()), size)[0] for p in _examples()]
    rand = torch.from_numpy(rng.uniform(-1, 1, (n_random, 3, size, size)).astype(np.float32))
    return torch.cat([rand, torch.stack(real)])


def _assert_parity(ref, out):
    reg0, log0 = ref
    reg1, log1 = out
    assert reg1.shape == reg0.shape and log1.shape == log0.shape
    sig = lambda x: torch.sigmoid(x.double().clamp(-100, 100))  # noqa: E731
    assert float((sig(log0) - sig(log1)).abs().max()) <= 1e-4
    assert float((reg0 - reg1).abs().max()) <= 1e-3


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Files exported once per session: {key: path}."""
    tmp = tmp_path_factory.mktemp("export")
    cache = {}

    def get(key):
        if key not in cache:
            name, kind = key.split(":")
            if kind == "onnx_pp":
                cache[key] = export_model(name, "onnx", tmp / f"{name}_pp.onnx", with_postprocess=True)
            elif kind == "onnx_int8":
                # post-training int8 only (back's default adds minutes of fine-tuning; tests/test_qat.py covers it)
                cache[key] = export_model(name, "onnx", tmp / f"{name}_int8.onnx", int8=True, qat_steps=0)
            elif kind == "onnx_int8_pp":
                cache[key] = export_model(name, "onnx", tmp / f"{name}_int8_pp.onnx", int8=True, qat_steps=0,
                                          with_postprocess=True)
            elif kind == "onnx_int8_conv_heads":  # the heads as exported, not rewritten as MatMul
                cache[key] = export_model(name, "onnx", tmp / f"{name}_int8c.onnx", int8=True, qat_steps=0,
                                          onnx_int8={"matmul_heads": False})
            elif kind == "onnx_int8_unaligned":
                cache[key] = export_model(name, "onnx", tmp / f"{name}_int8u.onnx", int8=True,
                                          onnx_int8={"channel_block": None})
            elif kind == "torchscript":
                cache[key] = export_model(name, "torchscript", tmp / f"{name}.pt")
            elif kind == "torchscript_int8":
                cache[key] = export_model(name, "torchscript", tmp / f"{name}_int8.pt", int8=True, qat_steps=0)
            elif kind == "tflite_int8":
                cache[key] = export_model(name, "tflite", tmp / f"{name}_int8.tflite", int8=True)
            elif kind == "tflite":
                cache[key] = export_model(name, "tflite", tmp / f"{name}.tflite")
            elif kind == "tflite_split":
                cache[key] = export_model(name, "tflite", tmp / f"{name}_split.tflite", split_heads=True)
            else:
                raise KeyError(key)
        return cache[key]

    return get


@pytest.mark.parametrize("name", ["short_range", "full_range_sparse"])
def test_onnx_float_matches_pytorch_with_dynamic_batch(exported, name):
    path = exported(f"{name}:onnx_pp")
    x = _inputs(get_config(name).input_size, n_random=2)  # batch of 6, exported with batch 2
    with torch.inference_mode():
        ref = create_model(name)(x)
    backend = load_backend(path)
    _assert_parity(ref, backend(x))
    assert backend.model_name == name


def test_onnx_metadata_describes_the_model(exported):
    import onnx

    model = onnx.load(str(exported("short_range:onnx_pp")))
    props = {p.key: p.value for p in model.metadata_props}
    meta = json.loads(props["blazeface"])
    cfg = get_config("short_range")
    assert props["model_name"] == meta["model"] == "short_range"
    assert meta["anchors"]["strides"] == list(cfg.anchors.strides) and meta["num_anchors"] == 896
    assert meta["decode"]["box_scale"] == 128.0 and meta["min_score"] == 0.5 and meta["min_suppression"] == 0.3
    assert meta["input"]["range"] == [-1.0, 1.0] and meta["input"]["shape"] == [-1, 3, 128, 128]
    assert meta["keypoints"][0] == "right_eye" and len(meta["keypoints"]) == 6
    assert meta["postprocess"]["nms"] == "weighted"
    assert not any(p.key for n in model.graph.node for p in n.metadata_props)  # no local stack traces


def test_torchscript_float_matches_pytorch(exported):
    path = exported("short_range:torchscript")
    x = _inputs(128, n_random=2)
    with torch.inference_mode():
        ref = create_model("short_range")(x)
    backend = load_backend(path)
    assert backend.metadata["model"] == "short_range" and backend.metadata["anchors"]["input_size"] == 128
    _assert_parity(ref, backend(x))


def test_face_detector_runs_exported_files_like_pytorch(exported):
    images = _examples() + _seeds()
    ref = FaceDetector("short_range", device="cpu")(images)
    for path in (exported("short_range:onnx_pp"), exported("short_range:torchscript")):
        for a, b in zip(ref, FaceDetector(path, device="cpu")(images)):
            assert len(a) == len(b)
            np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.05)
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


_PLAIN_ORT = textwrap.dedent('''
    import builtins, json, sys
    real_import = builtins.__import__
    def guarded(name, *args, **kwargs):
        if name.split(".")[0] == "blazeface":
            raise ImportError("blazeface must not be imported here")
        return real_import(name, *args, **kwargs)
    builtins.__import__ = guarded
    import numpy as np, onnxruntime as ort
    model, inputs, boxes_json = sys.argv[1:4]
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    meta = json.loads(sess.get_modelmeta().custom_metadata_map["blazeface"])
    x = np.load(inputs)
    boxes, kps, scores, batch = sess.run(["boxes", "keypoints", "scores", "batch_index"], {"input": x})
    letterboxes = json.loads(open(boxes_json).read())
    out = []
    for b, lb in enumerate(letterboxes):  # undo the letterbox: x_src = x_norm * side + x0
        sel = batch == b
        off = np.array([lb["x0"], lb["y0"]] * 2, np.float32)
        out.append({"boxes": (boxes[sel] * lb["side"] + off).tolist(), "scores": scores[sel].tolist(),
                    "keypoints": (kps[sel] * lb["side"] + off[:2]).tolist()})
    print(json.dumps({"model": meta["model"], "images": out}))
    assert not any(m.split(".")[0] == "blazeface" for m in sys.modules)
''')


@pytest.mark.parametrize("kind", ["onnx_pp", "onnx_int8_pp"])
def test_onnx_with_postprocess_runs_in_plain_onnxruntime(exported, kind, tmp_path):
    """The file's own decoding and NMS in onnxruntime alone give FaceDetector's faces: for float those of the
    PyTorch pipeline, for int8 those of the same int8 network without post-processing."""
    path = exported(f"short_range:{kind}")
    images = _examples() + _seeds()
    tensors, boxes = [], []
    for p in images:
        t, lb = letterbox(torch.from_numpy(read_image(p).copy()), 128)
        tensors.append(t)
        boxes.append({"x0": lb.x0, "y0": lb.y0, "side": lb.side})
    np.save(tmp_path / "x.npy", torch.stack(tensors).numpy())
    (tmp_path / "lb.json").write_text(json.dumps(boxes))
    (tmp_path / "run.py").write_text(_PLAIN_ORT)
    proc = subprocess.run([sys.executable, "-I", str(tmp_path / "run.py"), str(path), str(tmp_path / "x.npy"),
                           str(tmp_path / "lb.json")], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["model"] == "short_range"
    ref = FaceDetector("short_range" if kind == "onnx_pp" else str(exported("short_range:onnx_int8")), device="cpu")(images)
    total = 0
    for det, got in zip(ref, result["images"]):
        assert len(got["scores"]) == len(det)
        total += len(det)
        if len(det):
            np.testing.assert_allclose(np.asarray(got["boxes"]), det.xyxy, atol=0.01)
            np.testing.assert_allclose(np.asarray(got["keypoints"]), det.keypoints, atol=0.01)
            np.testing.assert_allclose(np.asarray(got["scores"]), det.scores, atol=1e-5)
    assert total >= 8  # 4 examples + 1 + 3 + 4 seed faces, less the profile


@pytest.mark.parametrize(("model", "kind"), [("short_range", "onnx_int8"), ("short_range", "tflite_int8"),
                                           ("back", "onnx_int8"), ("full_range_sparse", "onnx_int8"),
                                           ("back", "tflite_int8"), ("full_range_sparse", "tflite_int8"),
                                           ("short_range", "torchscript_int8"), ("full_range", "torchscript_int8"),
                                           ("full_range_sparse", "torchscript_int8"), ("back", "torchscript_int8")])
def test_int8_finds_the_same_faces_as_float(exported, model, kind):
    """Every face float finds clearly (score ≥ threshold + 0.1) int8 finds too, and the other way round, at IoU ≥ 0.9.
    Faces scoring within 0.1 of the threshold may flip (int8 moves scores by up to ~0.1 on the seed images)."""
    if kind == "tflite_int8":
        pytest.importorskip("litert_torch")
    path = exported(f"{model}:{kind}")
    backend = load_backend(path)
    assert backend.metadata["quantization"]["int8"] is True
    images = _examples() + _seeds()
    ref = FaceDetector(model, device="cpu")(images)
    got = FaceDetector(path, device="cpu")(images)
    clear = FaceDetector(model, device="cpu").min_score + 0.1
    # back's and full range sparse's int8 localize less well (their worst clear seed faces sit at IoU 0.90 and
    # 0.85; benchmarks/RESULTS.md)
    iou_min = {"short_range": 0.9, "back": 0.85}.get(model, 0.8)
    if kind == "torchscript_int8":  # PyTorch FX int8, 8-bit activations where the CPU has VNNI: short range's worst
        # seed face at IoU 0.92, one clear face of 4faces.png at 0.81 for another model (2026-12-06); 7-bit activations
        # without VNNI: 0.85 for short range (measured before the residual fusion)
        iou_min = (0.9 if model == "short_range" else 0.8) if cpu_has_vnni() else 0.75
    faces = 0
    for p, a, b in zip(images, ref, got):
        for x, y in ((a, b), (b, a)):
            sure = x[np.flatnonzero(x.scores >= clear)]
            if len(sure):
                assert len(y), p.name
                iou = box_iou(torch.from_numpy(sure.xyxy), torch.from_numpy(y.xyxy))
                assert float(iou.max(1).values.min()) >= iou_min, p.name
        faces += int((a.scores >= clear).sum())
    assert faces >= 6
    assert sum(len(a) for a in ref[:4]) == sum(len(b) for b in got[:4]) == 4  # one face per example photo


def test_torchscript_int8_runs_fused_under_its_own_engine(exported, monkeypatch):
    """The FX int8 file names its quantized engine; the loader packs (loads it once) and runs it there and restores
    the engine the caller had; residual sums are fused into the convolutions (one conv2d_add_relu per residual block)."""
    path = exported("short_range:torchscript_int8")
    before = torch.backends.quantized.engine
    load, engines = torch.jit.load, []
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: engines.append(torch.backends.quantized.engine) or load(*a, **k))
    backend = load_backend(path)
    assert engines == ["onednn"]
    assert backend.metadata["quantization"]["engine"] == backend.engine == "onednn"
    assert torch.backends.quantized.engine == before
    code = backend.module.code
    assert code.count("conv2d_add_relu") == 16  # short range: 16 residual BlazeBlocks
    assert "quantized.add_relu" not in code
    reg, logits = backend(torch.zeros(2, 3, 128, 128))
    assert reg.shape == (2, 896, 16) and logits.shape == (2, 896, 1)
    assert torch.backends.quantized.engine == before


def test_fused_residual_sum_overwrites_its_skip_input_and_conversion_refuses_a_late_reader():
    """oneDNN's ``conv2d_add_relu`` writes its result into the skip tensor: a graph that reads the skip again after
    the sum would compute garbage (here: the late reader sees the sum, far from float), so ``convert_torch_fx``
    refuses it, naming the reader; no shipped model has one."""
    import torch.nn.functional as F
    from torch.ao.quantization import QConfigMapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from blazeface.export.quantize import (TORCH_INT8_ENGINE, convert_torch_fx, fused_residual_backend_config,
                                           overwritten_residuals, torch_fx_qconfig)
    from blazeface.inference.files import quantized_engine

    class LateSkip(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.conv = torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(8, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skip = self.stem(x)
            out = F.relu(self.conv(skip) + skip)
            return torch.cat([out, x.mean(1, keepdim=True) + skip], 1)  # a quantized add reads skip after the sum

    torch.manual_seed(0)
    net = LateSkip().eval()
    x = torch.randn(4, 3, 8, 8)
    qmap = QConfigMapping().set_global(torch_fx_qconfig()).set_object_type(torch.cat, None)
    with quantized_engine(TORCH_INT8_ENGINE):
        prepared = prepare_fx(net, qmap, (x,), backend_config=fused_residual_backend_config())
        prepared(x)
        int8 = convert_fx(copy.deepcopy(prepared), backend_config=fused_residual_backend_config())
        late = overwritten_residuals(int8)
        assert len(late) == 1
        got = int8(x)[:, 8:]
        with pytest.raises(ValueError, match=f"{late[0]} read it afterwards"):
            convert_torch_fx(prepared, pixel_input=False)
    with torch.no_grad():
        want = net(x)[:, 8:]
    assert (got - want).abs().max() > 0.5  # the skip tensor now holds the sum


def test_int8_tflite_runs_the_backbone_in_int8(exported):
    """Backbone convolutions int8 with per-channel weights; heads, input and outputs float32 (logits not clipped)."""
    pytest.importorskip("litert_torch")
    from blazeface.convert import TFLiteGraph

    g = TFLiteGraph.from_file(exported("short_range:tflite_int8"))
    convs = [op for op in g.operators if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    int8 = [op for op in convs if g.tensors[op.inputs[0]].dtype == 9]
    assert len(int8) == len(convs) - 4  # all but the four head convolutions
    assert all(g.tensors[op.inputs[1]].quant_scale is not None and len(g.tensors[op.inputs[1]].quant_scale) > 1
               for op in int8)
    assert all(g.tensors[t].dtype == 0 for t in list(g.inputs) + list(g.outputs))
    head_weights = [g.tensors[op.inputs[0]] for op in g.operators if op.type == "DEQUANTIZE"
                    and g.tensors[op.inputs[0]].data is not None]
    assert len(head_weights) == 2 and all(t.dtype == 9 and len(t.quant_scale) > 1 for t in head_weights)
    # the two classifier heads (2 and 6 output channels) keep the float file's float32 weights, byte for byte
    def float_head_weights(graph: TFLiteGraph) -> list[tuple[int, bytes]]:
        return sorted((graph.tensors[op.inputs[1]].shape[0], graph.tensors[op.inputs[1]].data) for op in graph.operators
                      if op.type == "CONV_2D" and graph.tensors[op.inputs[1]].data is not None
                      and graph.tensors[op.inputs[1]].dtype == 0 and graph.tensors[op.inputs[1]].shape[0] in (2, 6))
    classifier_weights = float_head_weights(g)
    assert [n for n, _ in classifier_weights] == [2, 6]
    assert classifier_weights == float_head_weights(TFLiteGraph.from_file(exported("short_range:tflite")))
    assert sum(len(t.data) for t in g.tensors if t.data is not None) <= 130_000  # the weight budget
    x = _inputs(128)
    _, logits = load_backend(exported("short_range:tflite_int8"))(x)
    with torch.inference_mode():
        _, ref = create_model("short_range")(x)
    top = ref[-1, :, 0].argmax()  # the face anchor of the last example
    assert float(logits[-1, top, 0]) > 0 and float(logits.min()) < -50


def _tflite_ops(data):
    from ai_edge_litert import schema_py_generated as schema

    from blazeface.export.tflite_int8 import _code, _op_names

    names = _op_names(schema)
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    return model, names, [_code(model, op, names) for op in model.subgraphs[0].operators]


def test_tflite_float_tail_counts_arithmetic_ops_upstream_of_the_heads(exported):
    """short range's heads read two residual sums (ReLU fused into the ADD). Depth 1: those two ADDs and the
    transposes after them; depth 2 adds each sum's two inputs: its block's 1x1 convolution (behind a transpose)
    and the sum of the block before (one of them behind a channel PAD)."""
    pytest.importorskip("litert_torch")
    from collections import Counter

    from blazeface.export.tflite_int8 import float_tail_ops, head_ops

    model, names, kinds = _tflite_ops(exported("short_range:tflite").read_bytes())
    heads = head_ops(model, names)
    assert Counter(kinds[i] for i in heads) == {"CONV_2D": 4, "RESHAPE": 4, "CONCATENATION": 2}
    assert float_tail_ops(model, names, heads, 0) == set()
    assert Counter(kinds[i] for i in float_tail_ops(model, names, heads, 1)) == {"ADD": 2, "TRANSPOSE": 2}
    assert Counter(kinds[i] for i in float_tail_ops(model, names, heads, 2)) == {
        "ADD": 4, "CONV_2D": 2, "TRANSPOSE": 4, "PAD": 1}


def test_tflite_float_tail_runs_those_ops_in_float(exported):
    """With a float tail the file still loads in LiteRT: int8 tensors enter the float ops through DEQUANTIZE and
    leave them through QUANTIZE where the int8 backbone goes on; a tail covering the whole graph leaves no int8
    activation and gives back the float file's outputs up to its int8-stored 1x1 weights, far closer than int8."""
    pytest.importorskip("litert_torch")
    from blazeface.export.tflite_int8 import quantize_tflite

    data = exported("short_range:tflite").read_bytes()
    x = _inputs(128)
    calib = [img.permute(1, 2, 0)[None].numpy() for img in x]
    float_out = load_backend(exported("short_range:tflite"))(x)
    errors = {}
    for tail in (0, 2, 1000):
        q = quantize_tflite(data, calib, float_tail=tail)
        model, names, kinds = _tflite_ops(q)
        g = model.subgraphs[0]
        int8_acts = [t for op in g.operators for t in op.outputs if g.tensors[t].type == 9]
        counts = {k: kinds.count(k) for k in ("QUANTIZE", "DEQUANTIZE")}
        if tail == 0:
            assert counts["QUANTIZE"] == 1  # the input only
        elif tail == 2:
            # the input; in each head's stage the earlier tail sum feeds the next block (2); the 16x16 stage's
            # last sum feeds the stride-2 block's channel pad and (through a transpose) its max-pool (2)
            assert counts["QUANTIZE"] == 5
            assert counts["DEQUANTIZE"] > 8  # the heads' and tail convolutions' int8 weights, and the 4 entries
        else:
            assert int8_acts == [] and counts["QUANTIZE"] == 0
        path = exported("short_range:tflite").with_name(f"short_range_tail{tail}.tflite")
        path.write_bytes(q)
        reg, logits = load_backend(path)(x)
        errors[tail] = float((reg - float_out[0]).abs().mean()), float((logits - float_out[1]).abs().mean())
    # mean |error| over all anchors (measured: int8 1.62 px / 2.20 logit, all-float tail 0.47 / 0.72)
    assert errors[1000][0] < 0.4 * errors[0][0] and errors[1000][1] < 0.4 * errors[0][1]
    assert errors[1000][0] < 1.0


def test_int8_onnx_weights_are_small(exported):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(exported("short_range:onnx_int8")))
    weight_bytes = sum(numpy_helper.to_array(i).nbytes for i in model.graph.initializer)
    assert weight_bytes <= 130_000
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}


def test_int8_onnx_classifier_heads_keep_float16_weights(exported):
    """The classifier heads' weights are stored float16 (cast to float32 at load), not int8: back's
    ``classifiers.0`` has channels whose largest weight is > 300x their median, so a per-channel int8 step would
    round most of its weights to 0-3 levels. The regressor heads keep int8-stored weights."""
    import onnx
    from onnx import numpy_helper

    from blazeface.export.quantize import classifier_nodes, head_nodes

    back = create_model("back").classifiers[0].conv.weight.detach().abs().flatten(1)
    assert float((back.amax(1) / back.median(1).values).max()) > 300  # measured: 345
    model = onnx.load(str(exported("short_range:onnx_int8")))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    nodes = {n.name: n for n in model.graph.node}
    # short range's 1x1 heads are channels-last MatMul nodes (quantize.heads_as_matmul): weights [C, O]
    classifiers = [nodes[n] for n in classifier_nodes(model) if nodes[n].op_type == "MatMul"]
    regressors = [nodes[n] for n in set(head_nodes(model)) - set(classifier_nodes(model)) if nodes[n].op_type == "MatMul"]
    assert len(classifiers) == len(regressors) == 2
    for matmul in classifiers:
        cast = producer[matmul.input[1]]
        w = inits[cast.input[0]]
        assert cast.op_type == "Cast" and w.dtype == np.float16 and w.shape[1] in (2, 6)
    for matmul in regressors:
        dq = producer[matmul.input[1]]
        assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].dtype == np.int8
        assert inits[dq.input[0]].shape[1] in (32, 96)  # 2 and 6 anchors x 16 numbers per cell


def test_int8_onnx_matmul_heads_are_the_same_function(exported):
    """``heads_as_matmul`` rewrites short range's four 1×1 heads as channels-last MatMul nodes: on real photos the
    outputs are those of the file with the exported Conv heads (same calibration, so the same 8-bit body), and
    onnxruntime runs the regressors as integer GEMMs with float output and needs no layout transpose between the
    body and the heads (only the input's NCHW -> NHWC)."""
    import onnx
    import onnxruntime as ort

    from blazeface.export.quantize import calibration_images
    from blazeface.inference.backends import ort_session

    new, old = exported("short_range:onnx_int8"), exported("short_range:onnx_int8_conv_heads")
    assert sum(n.op_type == "MatMul" for n in onnx.load(str(new)).graph.node) == 4
    assert sum(n.op_type == "MatMul" for n in onnx.load(str(old)).graph.node) == 0
    x = calibration_images(EXAMPLES, 128, augment=False).numpy()
    (reg_new, log_new), (reg_old, log_old) = ort_session(new, 1).run(None, {"input": x}), ort_session(old, 1).run(None, {"input": x})
    assert np.abs(log_new - log_old).max() <= 1e-4 and np.abs(reg_new - reg_old).max() <= 1e-3  # float rounding
    assert np.abs(reg_old).max() > 10  # real outputs, not zeros
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(new.with_suffix(".opt.onnx"))
    ort.InferenceSession(str(new), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]
    assert ops.count("MatMulIntegerToFloat") == 2 and ops.count("Transpose") == 1


def test_int8_onnx_quantizes_the_channel_aligned_graph(exported):
    """Every int8 convolution has a multiple of 16 channels (ORT's symmetric depthwise kernels need it) and the
    graph has no residual channel Pad (the widening residuals are split convolutions); the stem sees 4 channels."""
    import onnx
    from onnx import helper, numpy_helper

    from blazeface.export.quantize import head_nodes

    model = onnx.load(str(exported("short_range:onnx_int8")))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    heads = set(head_nodes(model))  # float convolutions (int8-stored weights) with 2-96 output channels
    int8_convs = []
    for n in model.graph.node:
        if n.op_type != "Conv" or n.name in heads:
            continue
        w = inits.get(producer[n.input[1]].input[0])
        int8_convs.append(n)
        assert w is not None and w.dtype == np.int8 and w.shape[0] % 16 == 0
        assert w.shape[1] in (1, 4) or w.shape[1] % 16 == 0  # depthwise, the stem (RGB + a zero channel), aligned
        group = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "group"), 1)
        assert group == 1 or group % 16 == 0
    assert len(int8_convs) >= 37
    pads = [n for n in model.graph.node if n.op_type == "Pad"]  # only the input's zero 4th channel, in uint8
    assert len(pads) == 1 and producer[pads[0].input[0]].op_type == "QuantizeLinear" and len(pads[0].input) == 3


def test_int8_onnx_head_nodes_take_the_whole_full_range_head():
    """Full range's heads are a 1×1 convolution, a 3×3 depthwise one and a depth-to-space: both convolutions stay
    float in int8 (the 1×1 outputs are ×4 regressors, which one uint8 scale would round by pixels). Counted by
    hand: 2 heads (regressors, logits) × 2 convolutions; short range: 4 heads × one 1×1 convolution."""
    from onnx import helper

    from blazeface.export.onnx_export import export_raw_onnx
    from blazeface.export.quantize import head_feeding_nodes, head_nodes

    for model, convs, depthwise in (("full_range_sparse", 4, 2), ("short_range", 4, 0)):
        graph = export_raw_onnx(create_model(model).eval(), get_config(model).input_size)
        nodes = {n.name: n for n in graph.graph.node}
        heads = [nodes[n] for n in head_nodes(graph) if nodes[n].op_type == "Conv"]
        groups = [next((helper.get_attribute_value(a) for a in n.attribute if a.name == "group"), 1) for n in heads]
        assert len(heads) == convs and sum(g > 1 for g in groups) == depthwise, model
        # the first node upstream of each head is the backbone's ReLU, not a head convolution
        assert {nodes[n].op_type for n in head_feeding_nodes(graph, 1)} == {"Relu"}, model


def test_int8_onnx_pads_run_in_8_bits(exported):
    """Quantizing the network as trained: no residual channel pad runs in float between a DequantizeLinear and a
    QuantizeLinear."""
    import onnx

    model = onnx.load(str(exported("short_range:onnx_int8_unaligned")))
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    pads = [n for n in model.graph.node if n.op_type == "Pad"]
    assert len(pads) == 11  # one per residual block that widens its channels
    assert all(producer.get(n.input[0]) != "DequantizeLinear" and len(n.input) == 3 for n in pads)


def test_concat_inputs_take_the_output_scale():
    """Q(s1)/Q(s2) → DQ → Concat → Q(s3) → DQ: after share_concat_scales the inputs are quantized once, with s3,
    so the result is exactly one rounding of the concatenation to s3."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from blazeface.export.quantize import share_concat_scales

    def c(name, value):
        return numpy_helper.from_array(np.asarray(value), name)

    inits = [c("s1", np.float32(0.013)), c("s2", np.float32(0.041)), c("s3", np.float32(0.03)),
             c("z", np.uint8(0)), c("z2", np.uint8(0)), c("z3", np.uint8(0))]
    nodes = [helper.make_node("QuantizeLinear", ["a", "s1", "z"], ["aq"]),
             helper.make_node("DequantizeLinear", ["aq", "s1", "z"], ["ad"]),
             helper.make_node("QuantizeLinear", ["b", "s2", "z2"], ["bq"]),
             helper.make_node("DequantizeLinear", ["bq", "s2", "z2"], ["bd"]),
             helper.make_node("Concat", ["ad", "bd"], ["cat"], axis=1),
             helper.make_node("QuantizeLinear", ["cat", "s3", "z3"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "s3", "z3"], ["y"])]
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "g", [vi("a", TensorProto.FLOAT, [1, 2, 3, 3]), vi("b", TensorProto.FLOAT, [1, 2, 3, 3])],
                              [vi("y", TensorProto.FLOAT, [1, 4, 3, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    rng = np.random.default_rng(0)
    a, b = (rng.uniform(0, 3, (1, 2, 3, 3)).astype(np.float32) for _ in range(2))
    assert share_concat_scales(model) == 1
    assert {i.name for i in model.graph.initializer} == {"s3", "z3"}  # the inputs' own parameters are dropped
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"a": a, "b": b})[0]
    once = np.clip(np.round(np.concatenate([a, b], 1) / 0.03), 0, 255) * np.float32(0.03)
    np.testing.assert_allclose(y, once, atol=1e-6)


def test_duplicate_initializers_are_shared():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from blazeface.export.quantize import share_duplicate_initializers

    zeros = [numpy_helper.from_array(np.zeros(4, np.int8), f"z{i}") for i in range(3)]
    other = numpy_helper.from_array(np.array([0, 0, 0, 1], np.int8), "z3")
    nodes = [helper.make_node("Add", [f"z{i}", "x"], [f"y{i}"]) for i in range(4)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.INT8, [4])],
                              [helper.make_tensor_value_info(f"y{i}", TensorProto.INT8, [4]) for i in range(4)],
                              [*zeros, other])
    model = helper.make_model(graph)
    assert share_duplicate_initializers(model) == 2
    assert [i.name for i in model.graph.initializer] == ["z0", "z3"]
    assert [n.input[0] for n in model.graph.node] == ["z0", "z0", "z0", "z3"]
    onnx.checker.check_model(model)


def test_integer_pads_is_the_same_function():
    """Q → DQ → Pad(channels) → Q → DQ gives the same values as Q → Pad(uint8, zero point) → DQ, and zeros in the pad."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from blazeface.export.quantize import integer_pads

    def c(name, value):
        return numpy_helper.from_array(np.asarray(value), name)

    inits = [c("s", np.float32(0.05)), c("z", np.uint8(128)), c("pads", np.array([0, 0, 0, 0, 0, 3, 0, 0], np.int64))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("Pad", ["xd", "pads"], ["p"], name="pad"),
             helper.make_node("QuantizeLinear", ["p", "s", "z"], ["pq"]),
             helper.make_node("DequantizeLinear", ["pq", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = np.random.default_rng(0).uniform(-6, 6, (1, 2, 4, 4)).astype(np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    before = run(model)
    assert integer_pads(model) == 1
    assert [n.op_type for n in model.graph.node] == ["QuantizeLinear", "Pad", "DequantizeLinear"]
    after = run(model)
    np.testing.assert_array_equal(after, before)
    assert np.all(after[:, 2:] == 0) and np.abs(after[:, :2] - x).max() <= 0.025 + 1e-6


@pytest.mark.parametrize(("model", "rewritten"), [("short_range", 3), ("full_range", 4), ("back", 4),
                                               ("full_range_sparse", 0)])
def test_enlarged_stride2_kernels_are_the_same_function(model, rewritten):
    """Every TF-SAME stride-2 depthwise convolution (3 or 4 per model; full range sparse pads symmetrically already,
    the 3-channel stems keep their pad) becomes a symmetric one with a zero-led kernel, with the same outputs; by
    hand: 3×3 stride 2 on 6×6 pads (0, 1), output (0, 0) sums inputs rows and columns 0-2, (2, 2) rows 4-5."""
    from blazeface.export.quantize import enlarged_stride2_kernels

    net, ref_net = create_model(model).eval(), create_model(model).eval()
    assert enlarged_stride2_kernels(net) == rewritten
    x = _inputs(get_config(model).input_size)
    with torch.no_grad():
        for a, b in zip(ref_net(x), net(x)):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-4)
    seq = torch.nn.Sequential(torch.nn.ZeroPad2d((0, 1, 0, 1)), torch.nn.Conv2d(2, 2, 3, 2, groups=2, bias=False))
    torch.nn.init.ones_(seq[1].weight)
    image = torch.arange(72.0).reshape(1, 2, 6, 6)
    expected = torch.tensor([[0 + 1 + 2 + 6 + 7 + 8 + 12 + 13 + 14, 4 + 5 + 10 + 11 + 16 + 17],
                             [24 + 25 + 26 + 30 + 31 + 32, 28 + 29 + 34 + 35]], dtype=torch.float32)
    assert enlarged_stride2_kernels(seq) == 1
    conv = seq[1]
    assert conv.kernel_size == (4, 4) and conv.padding == (1, 1) and conv.stride == (2, 2)
    with torch.no_grad():
        out = seq(image)
    assert out.shape == (1, 2, 3, 3)
    torch.testing.assert_close(out[0, 0, ::2, ::2], expected, rtol=0, atol=0)
    # channel 1 is channel 0 plus 36 per input read: 3 rows (or 2 at the bottom edge) times 3 columns (or 2)
    taps = torch.tensor([[9.0, 9, 6], [9, 9, 6], [6, 6, 4]])
    torch.testing.assert_close(out[0, 1], out[0, 0] + 36 * taps, rtol=0, atol=0)


def test_tflite_backend_runs_mediapipe_files():
    """MediaPipe's own .tflite (no metadata): recognised by shape, same faces as PyTorch."""
    images = _examples()
    ref = FaceDetector("short_range", device="cpu")(images)
    det = FaceDetector(tflite_model("short_range"), device="cpu")
    assert det.model_name == "short_range"
    for a, b in zip(ref, det(images)):
        assert len(a) == len(b)
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.1)


def test_tflite_export_split_heads_reads_back(exported):
    from blazeface.convert import TFLiteGraph, convert_tflite

    path = exported("short_range:tflite_split")
    g = TFLiteGraph.from_file(path)
    assert [g.tensors[t].shape for t in g.outputs] == [(1, 512, 16), (1, 512, 1), (1, 384, 16), (1, 384, 1)]
    assert [g.tensors[t].shape for t in g.inputs] == [(1, 128, 128, 3)]
    name, state = convert_tflite(path)
    assert name == "short_range"
    shipped = create_model("short_range").state_dict()
    assert all(torch.equal(state[k], shipped[k]) for k in shipped)
    backend = load_backend(path)
    assert backend.metadata["model"] == "short_range"
    x = _inputs(128)
    with torch.inference_mode():
        ref = create_model("short_range")(x)
    _assert_parity(ref, backend(x))


@pytest.mark.parametrize("suffix", [".onnx", ".tflite", ".pt"])
def test_truncated_model_file_is_a_clear_error(exported, tmp_path, suffix):
    source = {".onnx": exported("short_range:onnx_pp"), ".pt": exported("short_range:torchscript"),
              ".tflite": tflite_model("short_range")}[suffix]
    bad = tmp_path / f"truncated{suffix}"
    bad.write_bytes(source.read_bytes()[:3000])
    with pytest.raises(ModelFileError, match=f"truncated{suffix}"):
        FaceDetector(bad, device="cpu")


@pytest.mark.parametrize("suffix", [".onnx", ".tflite", ".pt"])
def test_wrong_format_model_file_is_a_clear_error(tmp_path, suffix):
    bad = tmp_path / f"model{suffix}"
    bad.write_text("this is not a model")
    with pytest.raises(ModelFileError, match=f"model{suffix}"):
        FaceDetector(bad, device="cpu")


def test_missing_model_file_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        FaceDetector(tmp_path / "nope.onnx")
    assert main(["detect", str(EXAMPLES), "--model", str(tmp_path / "nope.onnx"), "--quiet"]) == 2
    assert "nope.onnx" in capsys.readouterr().err


def test_cli_export_and_detect_with_the_file(tmp_path, capsys):
    out = tmp_path / "sr.pt"
    assert main(["export", "short_range", "--format", "torchscript", "-o", str(out)]) == 0
    assert out.is_file()
    capsys.readouterr()
    assert main(["detect", str(EXAMPLES / "grace_hopper.jpg"), "--model", str(out), "--quiet"]) == 0
    rec = json.loads(capsys.readouterr().out.strip())
    assert rec["model"] == "short_range" and len(rec["faces"]) == 1 and rec["error"] is None


def test_cli_export_refuses_bad_combinations(tmp_path, capsys):
    assert main(["export", "short_range", "--format", "torchscript", "--with-postprocess",
                 "-o", str(tmp_path / "x.pt")]) == 1
    assert "ONNX only" in capsys.readouterr().err
    assert main(["export", "short_range", "-o", str(tmp_path / "x.bin")]) == 1
    assert "unknown export format" in capsys.readouterr().err


def test_torch_int8_options_reach_the_pytorch_quantizer(tmp_path, monkeypatch):
    """``torch_int8`` is for TorchScript int8 only; its ``reduce_range`` and ``qat_seeds`` reach ``quantize_torch_fx``
    (7-bit activations, the fine-tuning's seeds), and the file records them."""
    from blazeface.export import quantize

    for fmt, int8 in (("onnx", True), ("torchscript", False)):
        with pytest.raises(ValueError, match="torch_int8"):
            export_model("short_range", fmt, tmp_path / f"x.{fmt}", int8=int8, torch_int8={"qat_seeds": (1,)})
    real, seen = quantize.qat_finetune_fx, []

    def two_steps(prepared, teacher, images, new_observer, steps, seeds=(0,), **kwargs):
        seen.append(tuple(seeds))
        real(prepared, teacher, images, new_observer, steps=2, seeds=seeds, **kwargs)

    monkeypatch.setattr(quantize, "qat_finetune_fx", two_steps)
    path = export_model("short_range", "torchscript", tmp_path / "q.pt", int8=True, qat_steps=2,
                        torch_int8={"reduce_range": True, "qat_seeds": (3, 4)})
    assert seen == [(3, 4)]
    meta = load_backend(path).metadata["quantization"]
    assert meta["activations"].startswith("uint8 per tensor, 7 bits") and meta["qat_seeds"] == [3, 4]


def test_calibration_mosaics_are_grids_of_crops_of_the_photos():
    """k × k grids (k = 2, 3, 4, 6 in turn) of square crops: with two plain photos every cell is one plain colour,
    both colours appear, and the draw depends on the seed only."""
    from blazeface.export.quantize import mosaic_photos

    red = np.zeros((200, 300, 3), np.uint8)
    red[..., 0] = 200
    blue = np.zeros((300, 200, 3), np.uint8)
    blue[..., 2] = 150
    mosaics = mosaic_photos([red, blue], 5, seed=3)
    assert [m.shape for m in mosaics] == [(512, 512, 3), (510, 510, 3), (512, 512, 3), (510, 510, 3), (512, 512, 3)]
    colours = set()
    for m, k in zip(mosaics, (2, 3, 4, 6, 2)):
        cell = 512 // k
        for i in range(k):
            for j in range(k):
                block = m[i * cell:(i + 1) * cell, j * cell:(j + 1) * cell].reshape(-1, 3)
                assert (block == block[0]).all()
                colours.add(tuple(int(c) for c in block[0]))
    assert colours == {(200, 0, 0), (0, 0, 150)}
    assert all((a == b).all() for a, b in zip(mosaics, mosaic_photos([red, blue], 5, seed=3)))
    assert any((a != b).any() for a, b in zip(mosaics, mosaic_photos([red, blue], 5, seed=4)))


def test_calibration_mosaics_take_the_place_of_most_calibration_images():
    """With mosaics the batch keeps the size the photos alone give (64 for the 4 examples), most of it mosaics:
    the 16 examples' images and the 256 mosaics' are sampled down to 64 together (about 13 and 51)."""
    from blazeface.export.quantize import calibration_images

    plain = calibration_images(None, 64)
    mixed = calibration_images(None, 64, mosaics=16)
    assert plain.shape == mixed.shape == (64, 3, 64, 64)
    from_photos = sum(bool((plain == x).flatten(1).all(1).any()) for x in mixed)
    assert 3 <= from_photos <= 24
    assert torch.equal(calibration_images(None, 64, mosaics=16), mixed)


def test_calibration_mosaics_default_per_model_and_reach_the_file(tmp_path):
    """Back's and full range's TorchScript and short range's and full range's TFLite int8 calibrate on mosaics by
    default (benchmarks/int8_calibration_mosaics.py); the option overrides the default, and the file records how many."""
    from blazeface.export import default_calibration_mosaics

    assert default_calibration_mosaics("back", "torchscript") == default_calibration_mosaics("short_range", "tflite") == 16
    assert default_calibration_mosaics("full_range", "torchscript") == default_calibration_mosaics("full_range", "tflite") == 16
    assert default_calibration_mosaics("back", "onnx") == default_calibration_mosaics("full_range_sparse", "tflite") == 0
    path = export_model("short_range", "torchscript", tmp_path / "m.pt", int8=True, qat_steps=0, calibration_mosaics=4)
    meta = load_backend(path).metadata["quantization"]
    assert meta["calibration_mosaics"] == 4 and meta["calibration_images"] == 64
    plain = export_model("short_range", "onnx", tmp_path / "p.onnx", int8=True, qat_steps=0)
    assert "calibration_mosaics" not in load_backend(plain).metadata["quantization"]
    for bad, message in ((dict(int8=False, calibration_mosaics=4), "needs int8"),
                         (dict(int8=True, calibration_mosaics=-1), "must be >= 0")):
        with pytest.raises(ValueError, match=message):
            export_model("short_range", "onnx", tmp_path / "x.onnx", **bad)


def test_onnx_int8_options_need_an_int8_onnx_export(tmp_path):
    with pytest.raises(ValueError, match="onnx_int8"):
        export_model("short_range", "onnx", tmp_path / "x.onnx", onnx_int8={"quant_format": "qoperator"})
    with pytest.raises(ValueError, match="onnx_int8"):
        export_model("short_range", "torchscript", tmp_path / "x.pt", int8=True, onnx_int8={})


@pytest.mark.parametrize(("model", "tail"), [("back", 20), ("full_range_sparse", 12), ("full_range", 2)])
def test_int8_tflite_keeps_a_float_tail_and_warns_without_it(model, tail, tmp_path):
    """back, full range sparse and full range need their last layers in float (TFLite int8 without them: back 1,067
    wider_val_dev faces against float's 281; full range AP easy 0.0117 below float): the export keeps them by
    default, and warns when told not to."""
    import warnings

    from blazeface.io import ImageLoadError

    assert get_config(model).int8_tflite_float_tail == tail
    empty = tmp_path / "empty"
    empty.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        with pytest.raises(ImageLoadError, match="no images"):
            export_model(model, "tflite", tmp_path / "x.tflite", int8=True, calibration=empty)
    with pytest.warns(UserWarning, match="--tflite-float-tail"), pytest.raises(ImageLoadError, match="no images"):
        export_model(model, "tflite", tmp_path / "x.tflite", int8=True, calibration=empty, tflite_float_tail=0)
    with pytest.warns(UserWarning, match="--tflite-float-tail"):  # the CLI flag reaches the export
        assert main(["export", model, "--int8", "--tflite-float-tail", "0", "--calibration", str(empty),
                     "-o", str(tmp_path / "x.tflite")]) == 1
    with pytest.raises(ValueError, match="tflite_float_tail"):
        export_model(model, "onnx", tmp_path / "x.onnx", int8=True, tflite_float_tail=3)
    with pytest.raises(ValueError, match=">= 0"):
        export_model(model, "tflite", tmp_path / "x.tflite", int8=True, tflite_float_tail=-1)


def test_int8_float_block_before_a_max_pool():
    """A float block (``float_modules``) whose output feeds a stride-2 block's max pool: the pool reads a float tensor
    and pools it as it is (it raised on ``q_scale`` before); the faces' logits and boxes stay close to float
    (on the 4 examples at 128, measured: 31 anchors with a float logit > 0, logits within 0.1, box offsets within
    1.2 px; asserted with margin)."""
    from blazeface.export.quantize import _FloatMaxPool, calibration_images, quantize_torch_fx
    from blazeface.inference.files import quantized_engine

    images = calibration_images(None, 128, augment=False)
    net = create_model("short_range").eval()
    int8 = quantize_torch_fx(create_model("short_range").eval(), images, float_modules=("blocks.1",))
    assert isinstance(int8.get_submodule("blocks.2.pool"), _FloatMaxPool)
    with torch.no_grad(), quantized_engine("onednn"):
        (f_reg, f_logits), (q_reg, q_logits) = net(images), int8(images)
    faces = f_logits[..., 0] > 0
    assert int(faces.sum()) >= 20
    assert float((q_logits - f_logits)[..., 0][faces].abs().max()) < 0.3
    assert float((q_reg - f_reg)[faces].abs().max()) < 2.5


def test_int8_input_quantized_exactly_on_the_pixel_grid():
    """``exact_pixel_input``: letterboxed inputs (``p / 127.5 - 1``, uint8 ``p``) quantize to ``q = p`` and the int8
    stem gives the float convolution of the unrounded input (the int8 weights, the original bias) to within its
    output rounding, half a step, inside the padded border (≤ 1.1 steps on it); the calibrated input quantize
    (scale 0.007839, zero point 128) was up to 1.8 steps off."""
    import copy

    import torch.nn.functional as F

    from blazeface.export.quantize import PIXEL_STEP, calibration_images, exact_pixel_input, quantize_torch_fx
    from blazeface.inference.files import quantized_engine

    images = calibration_images(None, 128, augment=False)
    pixels = images * 127.5 + 127.5
    assert float((pixels - pixels.round()).abs().max()) < 1e-3  # letterboxing gives uint8 values
    with quantized_engine("onednn"), torch.no_grad():
        calibrated = quantize_torch_fx(create_model("short_range").eval(), images, pixel_input=False)
        exact = copy.deepcopy(calibrated)
        assert exact_pixel_input(exact)
        stem = calibrated.get_submodule("stem.1")
        padded = F.pad(images, (1, 2, 1, 2))
        expected = F.relu(F.conv2d(padded, stem.weight().dequantize(), stem.bias(), stride=2))
        worst = {}
        for name, model, shift in (("calibrated", calibrated, 0.0), ("exact", exact, PIXEL_STEP / 2)):
            q = torch.quantize_per_tensor(padded + shift, float(model.stem_1_input_scale_0),
                                          int(model.stem_1_input_zero_point_0), torch.quint8)
            if name == "exact":
                assert torch.equal(q.int_repr()[..., 1:-2, 1:-2].float(), pixels.round())
            out = model.get_submodule("stem.1")(q)
            steps = (out.dequantize() - expected.clamp(max=255 * out.q_scale())).abs() / out.q_scale()
            worst[name] = (float(steps[..., 1:-1, 1:-1].max()), float(steps.max()))
    assert worst["exact"][0] <= 0.5 + 1e-3 and worst["exact"][1] <= 1.1
    assert worst["calibrated"][0] > 1.0

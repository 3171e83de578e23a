"""Every backend gives the same raw outputs and the same detections; the CPU and torch letterboxes agree bit for bit."""

import numpy as np
import pytest
import torch

from blazeface import FaceDetector
from blazeface.inference import OnnxRuntimeBackend, TorchBackend, available_backends, make_backend
from blazeface.inference.nchwc import AlignedBlock, align_channels, nchwc_block_size
from blazeface.io import read_image
from blazeface.preprocess import Letterbox, letterbox, letterbox_numpy
from blazeface.registry import create_model, list_models

from .conftest import EXAMPLES, shared, tflite_model

MODELS = ["short_range", "back", "full_range", "full_range_sparse"]


def test_onnxruntime_is_available_in_tests():
    assert "onnxruntime" in available_backends()


@pytest.mark.parametrize("model", MODELS)
def test_raw_outputs_agree_across_backends(model, tmp_path, monkeypatch):
    monkeypatch.setenv("BLAZEFACE_CACHE", str(tmp_path))
    net = create_model(model)
    s = net.input_size
    x = torch.rand(3, 3, s, s) * 2 - 1
    ref_reg, ref_logits = TorchBackend(create_model(model), torch.device("cpu"))(x)
    ort = OnnxRuntimeBackend(net)
    assert ort.model_path.parent == tmp_path / "onnx" and ort.model_path.is_file()
    reg, logits = ort(x)
    assert reg.shape == ref_reg.shape and logits.shape == ref_logits.shape
    assert (torch.sigmoid(logits) - torch.sigmoid(ref_logits)).abs().max() <= 1e-4
    assert (reg - ref_reg).abs().max() <= 1e-3
    # A second backend for the same weights reuses the cached file.
    assert OnnxRuntimeBackend(create_model(model)).model_path == ort.model_path


@pytest.mark.parametrize("threads", [1, 2])
def test_onnxruntime_batch_in_chunks_equals_one_run(threads):
    """A batch larger than a chunk (one after the other at 1 thread, on workers at 2): the outputs of one run."""
    net = create_model("short_range")
    ort = OnnxRuntimeBackend(net, threads=threads, chunk=2)
    x = torch.rand(5, 3, 128, 128) * 2 - 1
    reg, logits = ort(x)
    ref_reg, ref_logits = ort._run(ort.session, x.numpy())
    assert reg.shape == (5, 896, 16) and logits.shape == (5, 896, 1)
    np.testing.assert_allclose(reg.numpy(), ref_reg, atol=1e-4)
    np.testing.assert_allclose(logits.numpy(), ref_logits, atol=1e-4)


def test_torch_cpu_batch_in_chunks_equals_one_run():
    backend = TorchBackend(create_model("short_range"), torch.device("cpu"))
    x = torch.rand(5, 3, 128, 128) * 2 - 1
    whole = backend(x)
    backend.cpu_chunk = 2
    chunked = backend(x)
    for a, b in zip(whole, chunked):
        assert a.shape == b.shape and a.shape[0] == 5
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize(("multiple", "input_channels"), [(8, 3), (16, 3), (16, 4)])
@pytest.mark.parametrize("model", list_models())
def test_channel_aligned_network_computes_the_same_function(model, multiple, input_channels):
    torch.manual_seed(0)
    net = create_model(model, pretrained=False)  # random weights and biases: the added channels must stay zero
    aligned = align_channels(net, multiple, input_channels)
    assert aligned.stem[-1].in_channels == input_channels
    blocks = [m for m in aligned.modules() if isinstance(m, AlignedBlock)]
    assert len(blocks) == sum(1 for _ in net.spec.blocks) + sum(s.blocks for s in net.spec.fpn)
    for block in blocks:  # every tensor between blocks is a whole number of channel blocks
        assert block.out_channels % multiple == 0 and block.dw1[-1].in_channels % multiple == 0
    x = torch.rand(2, 3, net.input_size, net.input_size) * 2 - 1
    with torch.no_grad():
        ref, got = net(x), aligned(x)
    for a, b in zip(ref, got):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-5)


def test_onnxruntime_graph_has_no_channel_pad(tmp_path, monkeypatch):
    import onnx

    monkeypatch.setenv("BLAZEFACE_CACHE", str(tmp_path))
    net = create_model("short_range")
    ops = [n.op_type for n in onnx.load(OnnxRuntimeBackend(net).model_path).graph.node]
    # 11 channel pads before. With 8-channel blocks (AVX2) 28, 36 and 42 round up to 32, 40 and 48, so 9 blocks still
    # widen and split; with 16 (AVX-512) 24 rounds up to 32 too and 4 blocks widen (36→48, 56→64, 72→80, 88→96).
    block = nchwc_block_size()
    splits = sum(b.split for b in align_channels(net, block).blocks)
    assert "Pad" not in ops and splits == {8: 9, 16: 4}[block] and ops.count("Concat") == splits + 2  # + heads' concats


def test_auto_backend_and_errors():
    assert make_backend("auto", create_model("short_range"), torch.device("cpu")).name == "onnxruntime"
    with pytest.raises(ValueError, match="unknown backend"):
        make_backend("tensorrt", create_model("short_range"), torch.device("cpu"))
    with pytest.raises(ValueError, match="half=True needs a CUDA device"):
        FaceDetector("short_range", device="cpu", backend="torch", half=True)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_detections_agree_across_backends(backend):
    images = [read_image(p) for p in sorted(EXAMPLES.iterdir())] + [read_image(shared("seed_images", "3faces.png"))]
    ref = FaceDetector("short_range", device="cpu", backend="torch")(images)
    got = FaceDetector("short_range", device="cpu", backend=backend)(images)
    for a, b in zip(ref, got):
        assert len(a) == len(b)
        assert np.abs(a.boxes - b.boxes).max(initial=0) < 0.05
        assert np.abs(a.scores - b.scores).max(initial=0) < 1e-4


@pytest.mark.parametrize("size", [128, 192, 256])
def test_numpy_and_torch_letterbox_are_bit_identical(size):
    for name in ["grace_hopper.jpg", "camera.png", "pillow_hopper.png"]:
        img = read_image(EXAMPLES / name)
        a, box_a = letterbox(torch.from_numpy(img.copy()), size)
        b, box_b = letterbox_numpy(img, size)
        assert box_a == box_b
        assert np.array_equal(a.numpy(), b)
        region = Letterbox(img.shape[1], img.shape[0], size, 10.5, -20.25, 300.0)  # any square, e.g. a tile
        assert np.array_equal(letterbox(torch.from_numpy(img.copy()), size, region)[0].numpy(),
                              letterbox_numpy(img, size, region)[0])


def test_opencv_and_numpy_resampling_are_bit_identical():
    """cv2.remap with our fixed-point maps gives the numpy gather's values, for any size, aspect and square
    (centred letterboxes, tiles inside, across and far outside the image)."""
    rng = np.random.default_rng(0)
    for trial in range(60):
        width, height = int(rng.integers(1, 1500)), int(rng.integers(1, 1500))
        img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        size = int(rng.choice([128, 192, 256]))
        if trial % 2:
            region = Letterbox.centered(width, height, size)
        else:
            side = float(rng.uniform(3, 2 * max(width, height)))
            region = Letterbox(width, height, size, float(rng.uniform(-side, width)), float(rng.uniform(-side, height)), side)
        a, _ = letterbox_numpy(img, size, region, use_opencv=True)
        b, _ = letterbox_numpy(img, size, region, use_opencv=False)
        assert np.array_equal(a, b), (width, height, region)


def test_letterbox_hand_checked():
    # A 2×1 image letterboxed to 2×2: side 2, y0 = -0.5; tensor pixel (j, i) samples (j, i - 0.5).
    img = np.array([[[255, 0, 0], [0, 255, 0]]], dtype=np.uint8)
    t, box = letterbox_numpy(img, 2)
    assert (box.x0, box.y0, box.side) == (0.0, -0.5, 2.0)
    # row 0 samples y = -0.5: half the first row, half zero padding → 127.5 rounds half up to 128.
    expected_red = np.array([[128, 0], [128, 0]]) * (2 / 255) - 1  # row 1 samples y = 0.5: half row 0, half padding
    assert np.allclose(t[0], expected_red, atol=1e-6)
    assert np.allclose(t[1], np.array([[0, 128], [0, 128]]) * (2 / 255) - 1, atol=1e-6)
    assert np.allclose(t[2], -1.0)


@pytest.mark.parametrize("model", ["short_range", "full_range_sparse"])
def test_fp16_tolerance_documented_in_readme(model):
    """The README's fp16 figures (scores within 5e-3, regressors within 0.5 input pixels), with fp16 arithmetic."""
    net = create_model(model)
    s = net.input_size
    images = [read_image(EXAMPLES / n) for n in ["astronaut.png", "grace_hopper.jpg", "camera.png"]]
    x = torch.from_numpy(np.stack([letterbox_numpy(i, s)[0] for i in images]))
    with torch.inference_mode():
        reg, logits = net(x)
        reg16, logits16 = create_model(model).half()(x.half())
    assert (torch.sigmoid(logits16.float()) - torch.sigmoid(logits)).abs().max() <= 5e-3
    assert (reg16.float() - reg).abs().max() <= 0.5


@pytest.mark.parametrize("kind", ["onnxruntime", "tflite file"])
def test_parallel_batch_pipeline_equals_one_image_at_a_time(kind):
    """A CPU batch runs as chunks through the whole pipeline on worker threads: the same detections, in input
    order, as each image alone (images of different sizes, one without a face)."""
    model = "short_range" if kind == "onnxruntime" else str(tflite_model("short_range"))
    images = [read_image(EXAMPLES / n) for n in ["astronaut.png", "grace_hopper.jpg", "camera.png", "pillow_hopper.png"]]
    images += [np.zeros((300, 200, 3), np.uint8), images[1][::2, ::2].copy(), images[0][:, 100:].copy()]
    detector = FaceDetector(model, device="cpu", threads=2)
    assert detector._runs_in_parallel(images)
    batch = detector(images)
    single = FaceDetector(model, device="cpu", threads=1)
    assert not single._runs_in_parallel(images)
    for image, got in zip(images, batch):
        want = single(image)
        assert got.image_size == (image.shape[1], image.shape[0])
        assert len(got) == len(want)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    assert [len(d) for d in batch[:5]] == [1, 1, 1, 1, 0]

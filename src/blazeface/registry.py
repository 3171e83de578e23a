"""The model registry: every variant is a frozen :class:`ModelConfig`; ``create_model(name)`` builds it."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path


from .config import AnchorOptions, ModelConfig
from .nn.blazenet import BlazeNet, BlockSpec, FPNStageSpec, HeadSpec, NetSpec

B = BlockSpec


def _single_blocks(channels: list[int], strides: dict[int, int]) -> tuple[BlockSpec, ...]:
    """Single blocks through ``channels`` (``channels[i] → channels[i+1]``), stride 2 at given block indices."""
    return tuple(B(a, b, strides.get(i, 1)) for i, (a, b) in enumerate(zip(channels, channels[1:])))


# Short range (= the 2019 front model): 24,24,28,32,36,42,48,56,64,72,80,88 | 96 ×5, stride 2 at 2, 5, 11.
_SHORT_RANGE_NET = NetSpec(
    input_size=128,
    stem_channels=24,
    stem_kernel=5,
    blocks=_single_blocks([24, 24, 28, 32, 36, 42, 48, 56, 64, 72, 80, 88, 96, 96, 96, 96, 96], {2: 2, 5: 2, 11: 2}),
    heads=(HeadSpec(feature=10, in_channels=88, anchors=2), HeadSpec(feature=15, in_channels=96, anchors=6)),
)

# Back: 8 blocks at each of 128² (24), 64² (24), 32² (48), 16² (96), then a plain stride-2 block to 8².
_BACK_CHANNELS = [24] * 8 + [24] * 8 + [48] * 8 + [96] * 8
_BACK_NET = NetSpec(
    input_size=256,
    stem_channels=24,
    stem_kernel=5,
    blocks=_single_blocks(_BACK_CHANNELS, {7: 2, 15: 2, 23: 2}) + (B(96, 96, 2, residual=False),),
    heads=(HeadSpec(feature=30, in_channels=96, anchors=2), HeadSpec(feature=31, in_channels=96, anchors=6)),
)


def _double(cin: int, mid: int, cout: int, stride: int = 1, residual: bool = True) -> BlockSpec:
    return B(cin, cout, stride, mid, residual)


def _full_range_net(sparse: bool) -> NetSpec:
    """Full range: double blocks, FPN back to 48², one anchor per cell. Sparse: other widths,
    no residual on stride-2 blocks, symmetric padding, depth-to-space heads."""
    res = not sparse
    if sparse:
        widths = [(32, 16, 64), (64, 32, 128), (128, 48, 192), (192, 96, 384)]
        blocks = [_double(32, 8, 32), _double(32, 8, 32)]
        for cin, mid, cout in widths:
            reps = 3 if cout == 384 else 2
            blocks.append(_double(cin, mid, cout, 2, residual=False))
            blocks += [_double(cout, mid, cout) for _ in range(reps)]
    else:
        blocks = [
            _double(32, 8, 32), _double(32, 8, 32),
            _double(32, 12, 48, 2, res), _double(48, 12, 48), _double(48, 16, 64),
            _double(64, 24, 96, 2, res), _double(96, 32, 128), _double(128, 32, 128),
            _double(128, 36, 144, 2, res), _double(144, 48, 192), _double(192, 64, 256),
            _double(256, 96, 384, 2, res), _double(384, 96, 384), _double(384, 96, 384), _double(384, 96, 384),
        ]
    return NetSpec(
        input_size=192,
        stem_channels=32,
        stem_kernel=3,
        blocks=tuple(blocks),
        fpn=(FPNStageSpec(10, 96, 2), FPNStageSpec(7, 64, 2), FPNStageSpec(4, 48, 1)),
        heads=(HeadSpec(feature=14, in_channels=48, anchors=1, depth_to_space=sparse),),
        padding="explicit" if sparse else "same",
    )


# The BlazeFace paper (arXiv 1907.05047), Table 4: 5×5 depthwise kernels, 5 single and 6 double blocks.
_PAPER_NET = NetSpec(
    input_size=128,
    stem_channels=24,
    stem_kernel=5,
    kernel_size=5,
    blocks=(
        B(24, 24), B(24, 24), B(24, 48, 2), B(48, 48), B(48, 48),
        _double(48, 24, 96, 2), _double(96, 24, 96), _double(96, 24, 96),
        _double(96, 24, 96, 2), _double(96, 24, 96), _double(96, 24, 96),
    ),
    heads=(HeadSpec(feature=7, in_channels=96, anchors=2), HeadSpec(feature=10, in_channels=96, anchors=6)),
)

_ANCHORS_128 = AnchorOptions(128, 4, (8, 16, 16, 16), 0.1484375, 0.75)
_ANCHORS_256 = AnchorOptions(256, 4, (16, 32, 32, 32), 0.15625, 0.75)
_ANCHORS_192 = AnchorOptions(192, 1, (4,), 0.1484375, 0.75, interpolated_scale_aspect_ratio=0.0)

_MODELS: dict[str, ModelConfig] = {
    c.name: c
    for c in (
        ModelConfig(
            name="short_range",
            description="MediaPipe short-range (front camera) model: faces within ~2 m, 128×128 input",
            net=_SHORT_RANGE_NET,
            anchors=_ANCHORS_128,
            box_scale=128.0,
            min_score=0.5,
            weights="short_range.safetensors",
            weights_sha256="98fb04144e2a61a8e067d080c0f57331adef255da9bd728569871f68a2d5488a",
            source_file="face_detection_short_range.tflite",
            source_sha256="3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
            # PyTorch FX int8 (TorchScript) on wider_val_dev, faces at IoU >= 0.9 of float's 57: post-training 47,
            # AP easy -0.001; 100 steps of QAT under PyTorch's rounding 51-55 over 4 seeds, AP easy -0.0012 to
            # +0.0031 (ea15ca5; about 30 s on 2 cores; benchmarks/torchscript_int8_accuracy.py --qat-seeds)
            int8_torch_qat_steps=100,
            # TFLite int8 calibrated on 16 mosaics of the examples: every seed-image face at IoU >= 0.9 (without: 4 and 3
            # of 5 over calibration draws 0, 1), wider_val_dev 52 and 52 of 57 (51, 50), 57 and 56 found by both (54, 55),
            # AP easy -0.0033 / +0.0018 (-0.0046 / -0.0003); benchmarks/int8_calibration_mosaics.py
            int8_tflite_calibration_mosaics=16,
        ),
        ModelConfig(
            name="back",
            description="MediaPipe back-camera model: smaller faces, 256×256 input",
            net=_BACK_NET,
            anchors=_ANCHORS_256,
            box_scale=256.0,
            min_score=0.65,
            weights="back.safetensors",
            weights_sha256="7a39da06f1a11e2c11079e64dd79b1c894b21d4d6e762b4b5968c6328aeb49b6",
            source_file="face_detection_back.tflite",
            source_sha256="e376cf6b168d5ece8a3cedb94acc4eb168a136aede125ccc3d903ef38f5beda8",
            # in 8 bits the last blocks' residual sums turn background into faces (examples/: 25 faces, not 4). With
            # float classifier weights (cf75ecf), of head_feeding_nodes depths 0, 6, 12, 20, 30, 45 post-training
            # int8 keeps 80, 116, 129, 139, 168, 202 of 281 wider_val_dev faces at IoU >= 0.9; 45 (87 of the graph's
            # 148 nodes float): 262 faces found, AP easy / medium 0.4650 / 0.2850 (float 0.4607 / 0.2791), at 0.70x
            # float speed for one image (depths 6-20: 0.88-0.95x); benchmarks/RESULTS.md
            int8_float_tail=45,
            # TFLite int8 (tflite_int8.float_tail_ops: arithmetic ops, a fused ADD+ReLU counts once): of 0, 2, 4, 6,
            # 9, 12, 15, 20 ops, 20 kept the most wider_val_dev faces at IoU >= 0.9 (94b7735); with float classifier
            # weights 213 of 281 (0: 45, 723 faces found), AP easy / medium 0.4692 / 0.2844 (float 0.4607 / 0.2791)
            int8_tflite_float_tail=20,
            # PyTorch FX int8 (TorchScript): all in 8 bits it finds 795 faces (float 281) on wider_val_dev, AP easy
            # 0.218 below float's; the last 4 blocks in float: 235 found, 119 at IoU >= 0.9, AP +0.002 / +0.004, 1.24x
            # float speed; the last 8: 254, 152, AP -0.001 / +0.005, 1.22x (72e825e; torchscript_int8_accuracy.py)
            int8_torch_float_modules=tuple(f"blocks.{i}" for i in range(24, 32)),
            # calibrated on 16 mosaics of the examples (crowd-scale faces) in place of most calibration images, FX int8
            # keeps 231 and 218 of 281 wider_val_dev faces at IoU >= 0.9 (calibration seeds 0, 1; without: 179, 189),
            # AP easy / medium +0.004 / +0.006 and +0.007 / +0.008; ONNX and TFLite gain nothing from them
            # (204-220 against 205-214); benchmarks/int8_calibration_mosaics.py, RESULTS.md
            int8_torch_calibration_mosaics=16,
        ),
        ModelConfig(
            name="full_range",
            description="MediaPipe full-range model (dense): faces within ~5 m, 192×192 input",
            net=_full_range_net(sparse=False),
            anchors=_ANCHORS_192,
            box_scale=192.0,
            min_score=0.6,
            weights="full_range.safetensors",
            weights_sha256="82537f62700f5dcf6586546aae4f24c0070993605188efa8df774f1b18513535",
            source_file="face_detection_full_range.tflite",
            source_sha256="99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
            # TFLite int8, with float classifier weights (e50ae60, wider_val_dev): of 0, 2, 4, 8 arithmetic ops in
            # float, 0 lost AP easy 0.0117 (0.4330 against float's 0.4447; 117 of 140 faces at IoU >= 0.9); 2 keeps
            # AP 0.4450 / 0.2420 (float 0.4447 / 0.2402), 120 matched, at 1.45x float speed in LiteRT (8: 127, 1.15x);
            # benchmarks/results/tflite_int8_tail_full_range_epyc_vnni.json
            int8_tflite_float_tail=2,
            # TFLite int8 calibrated on 16 mosaics of the examples, calibration draws 0-3: 131, 125, 126, 127 of 140
            # wider_val_dev faces at IoU >= 0.9, AP easy +0.002 to -0.014 (without: 120, 125, 120, 120, AP easy +0.000
            # to -0.027); benchmarks/int8_calibration_mosaics.py
            int8_tflite_calibration_mosaics=16,
            # PyTorch FX int8 on wider_val_dev, faces at IoU >= 0.9 of float's 140: post-training 123; 100 steps of QAT
            # 122-132 over single seeds (AP easy -0.005 to +0.014); the weights of 3 seeds' runs averaged 128 and 127
            # over two seed trios (AP easy +0.0015 / -0.0067), steadier (6990ad0; benchmarks/RESULTS.md)
            int8_torch_qat_steps=100,
            int8_torch_qat_seeds=(0, 1, 2),
            # calibrated (and fine-tuned) on 16 mosaics of the examples in place of most calibration images: 130 and 128
            # of 140 wider_val_dev faces at IoU >= 0.9 (calibration seeds 0, 1; without: 128, 127), AP easy / medium
            # +0.002 / +0.001 and +0.001 / -0.004, every seed-image face at IoU >= 0.9 (without: 7 of 8);
            # benchmarks/int8_calibration_mosaics.py
            int8_torch_calibration_mosaics=16,
        ),
        ModelConfig(
            name="full_range_sparse",
            description="MediaPipe full-range sparse model (the one MediaPipe's model_selection=1 runs)",
            net=_full_range_net(sparse=True),
            anchors=_ANCHORS_192,
            box_scale=192.0,
            min_score=0.6,
            weights="full_range_sparse.safetensors",
            weights_sha256="f83b59e404ee38d306e3babc17e4199209b7ffcd2ad26fd8240ca771371db3f4",
            source_file="face_detection_full_range_sparse.tflite",
            source_sha256="671dd2f9ed11a78436fc21cc42357a803dfc6f73e9fb86541be942d5716c2dce",
            # all in 8 bits its logits near faces drop by 0.42 on average (full range: 0.03) and int8 keeps 103 of 161
            # wider_val_dev faces; with the 12 nodes nearest the head in float it keeps all 161 (of 3, 6, 9, 12, 15, 20
            # nodes: 115, 117, 154, 161, 156, 156 faces); 99.999th-percentile or min-max ranges instead were worse (231
            # and 42 faces), and QAT too (92). With float classifier weights (cf75ecf), on two AMD EPYCs: 12 nodes find
            # 150, 121 at IoU >= 0.9, AP easy / medium 0.4075 / 0.2039, 0.018 above float's 0.3898 / 0.1956 (outside
            # the 0.01 band; an Intel Xeon gave 0.3967 / 0.1980); 16 find 152, 125 matched, AP 0.3869 / 0.1947, at
            # 0.63x float speed for one image against 0.75x (both slower than float); longer tails match more only as
            # the graph stops being int8 (30: 150 matched with 7 of 91 convolutions int8, at 0.33x float);
            # benchmarks/results/int8_float_tail_full_range_sparse_epyc_*.json
            int8_float_tail=16,
            # TFLite int8: of 0, 3, 6, 9, 12 arithmetic ops, 12 keeps the most faces at IoU >= 0.9 (140 of 161; 0: 47),
            # AP 0.3936 / 0.1987 (float 0.3898 / 0.1956)
            int8_tflite_float_tail=12,
            # PyTorch FX int8: all in 8 bits it finds 57 of 161 faces, AP easy 0.106 below float's; the last FPN stage
            # (48 channels at 48x48) in float: 146 found, 104 at IoU >= 0.9, AP +0.005 / +0.003, 1.53x float speed;
            # the last two: 172, 122, AP +0.021 / +0.013 (outside the band), 1.44x (72e825e). With the exact input
            # (10c10b4) fpn.2 alone matched 111, AP +0.0105 / +0.008: its logits near faces sat 0.18 low on average,
            # clipped by the histogram ranges of fpn.1's second block (min-max ranges there: bias -0.02 but spread
            # 0.44 -> 0.50); that block in float too: 124 matched, AP +0.003 / +0.008, bias -0.03 (f7757ce;
            # benchmarks/RESULTS.md, *PyTorch int8 with quantization-aware fine-tuning*)
            int8_torch_float_modules=("fpn.2", "fpn.1.blocks.1"),
        ),
        ModelConfig(
            name="front_2019",
            description="The original 2019 front model (fp32); weights not shipped: convert the .tflite yourself",
            net=_SHORT_RANGE_NET,
            anchors=_ANCHORS_128,
            box_scale=128.0,
            min_score=0.75,
            source_file="face_detection_front_2019.tflite",
            source_sha256="a31cce739e9f5b9b08a15ef5ff90c500a46e96bd2c87f329d58a008dfd6c42ff",
        ),
        ModelConfig(
            name="paper",
            description="The BlazeFace paper's architecture (5×5 kernels, double blocks), for training",
            net=_PAPER_NET,
            anchors=_ANCHORS_128,
            box_scale=128.0,
            min_score=0.5,
            license="Apache-2.0 (architecture only; no pretrained weights)",
        ),
    )
}

_ALIASES = {"front": "short_range", "short": "short_range", "full": "full_range_sparse"}


def list_models(pretrained: bool | None = None) -> list[str]:
    """Registered model names; ``pretrained=True`` lists only those whose weights ship in the package."""
    names = sorted(_MODELS)
    if pretrained is None:
        return names
    return [n for n in names if (_MODELS[n].weights is not None) == pretrained]


def get_config(name: str) -> ModelConfig:
    """The :class:`ModelConfig` registered as ``name`` (or an alias such as ``"front"``)."""
    key = _ALIASES.get(name, name)
    if key not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _MODELS[key]


def weights_path(config: ModelConfig) -> Path:
    """Path of the weight file shipped for ``config``."""
    if config.weights is None:
        raise ValueError(
            f"model {config.name!r} ships no weights; convert {config.source_file or 'a checkpoint'} with "
            "`blazeface convert` and pass weights=PATH"
        )
    return Path(str(resources.files("blazeface") / "weights" / config.weights))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_weights(model: BlazeNet, path: str | Path, expected_sha256: str | None = None) -> BlazeNet:
    """Load a ``.safetensors`` state dict into ``model`` (strict: every tensor, every shape)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if expected_sha256 and sha256_file(path) != expected_sha256:
        raise ValueError(f"weights file {path} does not match its recorded sha256 {expected_sha256}")
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"cannot read weights file {path}: {exc}") from exc
    model.load_state_dict(state, strict=True)
    return model


def create_model(name: str, pretrained: bool = True, weights: str | Path | None = None) -> BlazeNet:
    """Build the network registered as ``name``, in eval mode.

    ``pretrained`` loads the weights shipped in the package; ``weights`` loads a ``.safetensors``
    file instead (e.g. one written by ``blazeface convert`` or by training).
    """
    config = get_config(name)
    model = BlazeNet(config.net)
    if weights is not None:
        load_weights(model, weights)
    elif pretrained:
        load_weights(model, weights_path(config), config.weights_sha256 or None)
    return model.eval()

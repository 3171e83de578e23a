"""TFLite export through Google's PyTorch-to-LiteRT converter (``litert-torch``, the ``tflite-export`` extra).

The graph takes ``[1, S, S, 3]`` float input in [-1, 1] (NHWC, as MediaPipe's models) and returns
``regressors [1, A, 16]`` and ``logits [1, A, 1]``; ``split_heads=True`` gives the per-head layout of
the vendor model zoos instead (short range: ``(1,512,16), (1,512,1), (1,384,16), (1,384,1)``).
int8: the float file rewritten as a full-integer model (:mod:`.tflite_int8`): int8 activations, per-channel
int8 weights, int32 biases, calibrated on the given images after cross-layer equalization, so the backbone
runs in XNNPACK's QS8 kernels; the heads (and the model's ``int8_tflite_float_tail`` layers before them) stay
float and input/outputs are float32.
Our metadata JSON is stored in the flatbuffer's ``metadata`` table under the name ``blazeface``.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .metadata import METADATA_KEY, dumps


class ChannelsLastNet(nn.Module):
    """``BlazeNet`` taking NHWC input; outputs concatenated, or split per head (reg, cls, reg, cls, …)."""

    def __init__(self, net: nn.Module, split_heads: bool = False) -> None:
        super().__init__()
        self.net = net
        self.split_heads = split_heads

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = x.permute(0, 3, 1, 2)
        if not self.split_heads:
            return tuple(self.net(x))
        feats = self.net.features(x)
        outs: list[torch.Tensor] = []
        for reg, cls, f in zip(self.net.regressors, self.net.classifiers, feats):
            outs += [reg(f), cls(f)]
        return tuple(outs)


def _import_litert_torch() -> Any:
    try:
        import litert_torch
    except ImportError as exc:
        raise ImportError(
            "TFLite export needs Google's converter: pip install 'blazeface[tflite-export]' (litert-torch)") from exc
    return litert_torch


@contextlib.contextmanager
def _quiet() -> Any:
    """The converter prints progress to stdout and stderr; keep our CLI's output clean."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        yield buf


def export_tflite(net: nn.Module, input_size: int, path: str | Path, meta: dict[str, Any],
                  split_heads: bool = False, int8_images: torch.Tensor | None = None, float_tail: int = 0) -> Path:
    """Convert ``net`` to a ``.tflite`` file (float, or int8 calibrated on ``int8_images [N, 3, S, S]``, with
    ``float_tail`` arithmetic ops upstream of the heads left in float)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    litert_torch = _import_litert_torch()
    wrapper = ChannelsLastNet(net.eval(), split_heads).eval()
    example = (torch.zeros(1, input_size, input_size, 3),)
    with _quiet(), torch.no_grad():
        edge = litert_torch.convert(wrapper, example)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        edge.export(str(path))
    if int8_images is not None:
        from .tflite_int8 import quantize_tflite

        path.write_bytes(quantize_tflite(path.read_bytes(), (img.permute(1, 2, 0)[None].numpy() for img in int8_images),
                                         float_tail=float_tail))
    path.write_bytes(add_tflite_metadata(path.read_bytes(), meta))
    return path


def add_tflite_metadata(data: bytes, meta: dict[str, Any]) -> bytes:
    """The flatbuffer ``data`` with ``meta`` (JSON) added as metadata entry ``blazeface``."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    blob = schema.BufferT()
    blob.data = list(dumps(meta).encode())
    model.buffers.append(blob)
    entry = schema.MetadataT()
    entry.name = METADATA_KEY
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_KEY, METADATA_KEY.encode())]
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_tflite_metadata(data: bytes) -> dict[str, Any] | None:
    """Our metadata JSON from a ``.tflite`` flatbuffer, or ``None``."""
    import json

    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if (entry.Name() or b"").decode() == METADATA_KEY:
            buf = model.Buffers(entry.Buffer())
            return json.loads(buf.DataAsNumpy().tobytes().decode())
    return None

"""The converter against the TFLite interpreter and the shipped weights."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from blazeface import create_model, get_config
from blazeface.convert import (ConversionError, TFLiteFormatError, compare_with_tflite, convert_file,
                               convert_tflite)
from blazeface.io import read_image
from blazeface.preprocess import letterbox
from blazeface.registry import sha256_file, weights_path

from .conftest import EXAMPLES, tflite_model

SHIPPED = ["short_range", "back", "full_range", "full_range_sparse"]


@pytest.fixture(scope="session")
def front_2019_weights(tmp_path_factory):
    out = tmp_path_factory.mktemp("w") / "front_2019.safetensors"
    name, path = convert_file(tflite_model("front_2019"), out)
    assert name == "front_2019"
    return path


@pytest.mark.parametrize("name", SHIPPED)
def test_conversion_reproduces_shipped_weights_exactly(name, tmp_path):
    config = get_config(name)
    source = tflite_model(name)
    assert sha256_file(source) == config.source_sha256
    model_name, out = convert_file(source, tmp_path / "w.safetensors")
    assert model_name == name
    assert sha256_file(out) == sha256_file(weights_path(config)) == config.weights_sha256
    converted, shipped = load_file(str(out)), load_file(str(weights_path(config)))
    assert converted.keys() == shipped.keys()
    assert all(torch.equal(converted[k], shipped[k]) for k in shipped)


def _real_input(size):
    tensor, _ = letterbox(torch.from_numpy(read_image(EXAMPLES / "grace_hopper.jpg").copy()), size)
    return tensor.permute(1, 2, 0).numpy()[None]


@pytest.mark.parametrize("name", SHIPPED + ["front_2019"])
def test_raw_outputs_match_tflite_interpreter(name, request):
    if name == "front_2019":
        model = create_model(name, weights=request.getfixturevalue("front_2019_weights"))
    else:
        model = create_model(name)
    s = model.input_size
    rng = np.random.default_rng(0)
    images = np.concatenate([rng.uniform(-1, 1, (1, s, s, 3)).astype(np.float32), _real_input(s)])
    report = compare_with_tflite(model, tflite_model(name), images)
    assert report.max_score_diff <= 1e-4, report
    assert report.max_regressor_diff <= 1e-3, report


def test_front_2019_differs_from_short_range(front_2019_weights):
    a = load_file(str(front_2019_weights))
    b = load_file(str(weights_path(get_config("short_range"))))
    assert a.keys() == b.keys()
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_truncated_model_is_a_clear_error(tmp_path):
    bad = tmp_path / "truncated.tflite"
    bad.write_bytes(tflite_model("short_range").read_bytes()[:5000])
    with pytest.raises((TFLiteFormatError, ConversionError), match="truncated.tflite"):
        convert_tflite(bad)


def test_wrong_format_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_text("this is not a model")
    with pytest.raises(TFLiteFormatError, match="not a TFLite flatbuffer"):
        convert_tflite(bad)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tflite"):
        convert_tflite(tmp_path / "nope.tflite")


def test_graph_of_another_architecture_is_refused():
    with pytest.raises(ConversionError, match="input shape|match"):
        convert_tflite(tflite_model("full_range"), model="short_range")
    with pytest.raises(ConversionError):
        convert_tflite(tflite_model("full_range_sparse"), model="full_range")
